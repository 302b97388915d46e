import Foundation
import Testing
import Tensor
@testable import Runtime

/// Loads `Fixtures/<path>` (JSON written by tools/gen_runtime_fixtures.py).
func loadRuntimeFixture(_ path: String) throws -> [String: Any] {
    let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
    let data = try Data(contentsOf: base.appendingPathComponent(path))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// FNV-1a 64 of the values' little-endian F32 bytes, as the generator script computes it.
func fnv1a64(_ values: [Float]) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for value in values {
        var bits = value.bitPattern.littleEndian
        withUnsafeBytes(of: &bits) { bytes in
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
        }
    }
    return String(hash, radix: 16).leftPadded(to: 16)
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

func bits(_ any: Any?) -> [UInt32] { (any as? [NSNumber] ?? []).map { $0.uint32Value } }

@Suite("TorchCPUGenerator")
struct RandomTests {
    /// Checks one recorded draw: hash of all values plus the first and last 8 bit patterns.
    private func expectMatches(_ values: [Float], _ record: [String: Any], _ label: String) {
        #expect(values.count == (record["count"] as? Int), "\(label): count")
        #expect(values.prefix(8).map(\.bitPattern) == bits(record["head"]), "\(label): first 8")
        #expect(values.suffix(8).map(\.bitPattern) == bits(record["tail"]), "\(label): last 8")
        #expect(fnv1a64(values) == record["fnv1a64"] as? String, "\(label): hash of all values")
    }

    @Test("randn/rand match torch bit for bit, both Box-Muller kernels", arguments: TorchNormalKernel.allCases)
    func matchesTorch(kernel: TorchNormalKernel) throws {
        let fixture = try loadRuntimeFixture("random/torch_randn.json")
        let data = try #require(fixture[kernel.rawValue] as? [String: Any])
        let cases = try #require(data["cases"] as? [[String: Any]])
        #expect(cases.count == 8)
        for testCase in cases {
            let seed = try #require(UInt64(testCase["seed"] as? String ?? ""))
            var generator = TorchCPUGenerator(seed: seed, normalKernel: kernel)
            for (index, call) in (testCase["calls"] as? [[String: Any]] ?? []).enumerated() {
                let shape = (call["shape"] as? [Int]) ?? []
                let tensor = call["op"] as? String == "rand" ? generator.rand(shape) : generator.randn(shape)
                #expect(tensor.shape == shape)
                expectMatches(tensor.floats, call, "\(kernel) seed \(seed) call \(index) \(shape)")
            }
        }
        let full = try #require(data["full"] as? [String: Any])
        var generator = TorchCPUGenerator(seed: 2024, normalKernel: kernel)
        #expect(generator.normalFloats(count: 20).map(\.bitPattern) == bits(full["randn20"]))
        #expect(generator.normalFloats(count: 5).map(\.bitPattern) == bits(full["randn5"]))
        #expect(generator.uniformFloats(count: 6).map(\.bitPattern) == bits(full["rand6"]))
    }

    @Test("the two kernels differ in last bits only, and short draws do not depend on the kernel")
    func kernelsDiffer() {
        var a = TorchCPUGenerator(seed: 5, normalKernel: .avx2)
        var b = TorchCPUGenerator(seed: 5, normalKernel: .scalar)
        let x = a.normalFloats(count: 4096), y = b.normalFloats(count: 4096)
        let differing = zip(x, y).filter { $0 != $1 }.count
        #expect(differing > 0)
        #expect(zip(x, y).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) })
        #expect(a.normalFloats(count: 15) == b.normalFloats(count: 15))
    }

    @Test("reseeding clears the cached scalar sample; seeds keep only their low 32 bits")
    func seeding() {
        var g = TorchCPUGenerator(seed: 9)
        let first = g.normalFloats(count: 3)              // leaves a cached sample
        g.manualSeed(9)
        #expect(g.normalFloats(count: 3) == first)
        var high = TorchCPUGenerator(seed: 9 + (1 << 32))
        var low = TorchCPUGenerator(seed: 9)
        #expect(high.uniformFloats(count: 10) == low.uniformFloats(count: 10))
    }

    @Test("A1111 image noise (CPU source) matches per-image generators and ENSD reseeding")
    func a1111ImageNoise() throws {
        let fixture = try loadRuntimeFixture("random/torch_randn.json")
        let cases = try #require(fixture["a1111_image_noise"] as? [[String: Any]])
        #expect(cases.count == 2)
        for testCase in cases {
            let seeds = (testCase["seeds"] as? [Int] ?? []).map { UInt64($0) }
            let shape = testCase["shape"] as? [Int] ?? []
            var source = A1111ImageNoise(seeds: seeds, shape: shape,
                                         etaNoiseSeedDelta: UInt64(testCase["eta_noise_seed_delta"] as? Int ?? 0))
            for (index, call) in (testCase["calls"] as? [[String: Any]] ?? []).enumerated() {
                let noise = source.next()
                #expect(noise.shape == [seeds.count] + shape)
                expectMatches(noise.floats, call, "A1111 seeds \(seeds) call \(index)")
            }
        }
    }
}
