import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Module math against float64 references computed by tools/gen_lora_fixtures.py
/// (`make_unit_refs`: torch float64, A1111's formulas): OFT's Cayley transform with constraint
/// and rescale, BOFT, DoRA on both axes (linear and conv, strength 1 and 0.6), PEFT's
/// magnitude vector, Tucker LoRA, LoHa CP, LoKr conv (4-D and flattened factor), GLoRA's
/// original layout.
struct LoRAReferenceUnitTests {
    struct Reference: Decodable, CustomTestStringConvertible, Sendable {
        struct Case: Decodable, Sendable { let strength: Float; let delta: String }
        let name: String
        let notes: String
        let tensors: [String: String]
        let weight: String
        let cases: [Case]
        let layer: String
        var testDescription: String { name }
    }

    static let references: [Reference] = {
        struct File: Decodable { let tests: [Reference] }
        let data = try! Data(contentsOf: URL(fileURLWithPath: "\(loraFixtures)/unit.json"))
        return try! JSONDecoder().decode(File.self, from: data).tests
    }()

    @Test(arguments: references)
    func deltaMatchesFloat64Reference(_ r: Reference) throws {
        let file = try SafeTensorsFile(path: "\(loraFixtures)/unit.safetensors")
        let tensors = try r.tensors.sorted { $0.key < $1.key }.map { ($0.key, try file.tensor(named: $0.value)) }
        let adapter = try loadAdapter(tensors)
        let module = try #require(adapter.modules.first)
        #expect(adapter.modules.count == 1)
        let weight = try file.tensor(named: r.weight).to(.f32)
        for c in r.cases {
            let want = try file.tensor(named: c.delta)
            let got = try #require(try module.delta(weight: weight, options: DeltaOptions(strength: c.strength)).weight)
            #expect(got.count == want.count)
            let diff = maxAbsDiff(got.reshaped(want.shape), want)
            #expect(diff <= 1e-5 * maxAbs(want), "\(r.name) @\(c.strength): max diff \(diff) of \(maxAbs(want))")
        }
    }
}
