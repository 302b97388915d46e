import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// Hashes (A1111's sha256/AutoV2/model_hash/addnet, kohya's sshs_*) against Python hashlib on
/// the same bytes, and A1111's tag ranking (fixtures from tools/gen_lora_ops_fixtures.py).
@Suite struct OperationsMetadataTests {
    struct HashFixture: Decodable {
        struct OneKeyFile: Decodable { let size: Int; let sha256: String; let autoV2: String; let addnet: String; let legacy: String }
        let ssMetadata: [String: String]
        let sshsModelHash: String
        let sshsLegacyHash: String
        let oneKeyFile: OneKeyFile
        let emptyLegacy: String
    }

    /// ((i·7919 + seed) mod 2001 − 1000) / 1024, as the generator builds them.
    static func pattern(_ count: Int, seed: Int) -> [Float] {
        (0..<count).map { Float(((($0 * 7919 + seed) % 2001) - 1000)) / 1024 }
    }

    static let tensors: [(String, Tensor)] = [
        ("lora_unet_x.lora_down.weight", Tensor(shape: [4, 80000], values: pattern(4 * 80000, seed: 1))),
        ("lora_unet_x.lora_up.weight", Tensor(shape: [320, 4], values: pattern(320 * 4, seed: 2)).to(.f16)),
        ("lora_unet_x.alpha", Tensor(shape: [], values: [2])),
    ]

    static let fixture: HashFixture = try! JSONDecoder().decode(
        HashFixture.self, from: Data(contentsOf: URL(fileURLWithPath: "\(opsFixtures)/hashes.json")))

    @Test func kohyaPrecomputedHashes() throws {
        let dir = try OpsScratch()
        let out = dir.file("h.safetensors")
        // Keys outside ss_* do not enter kohya's hashes.
        var metadata = Self.fixture.ssMetadata
        metadata["modelspec.title"] = "anything"
        metadata["zz_note"] = "ignored"
        let written = try LoRAFileWriter.write(Self.tensors, metadata: metadata, to: out)
        #expect(written.modelHash == Self.fixture.sshsModelHash)
        #expect(written.legacyHash == Self.fixture.sshsLegacyHash)
        let file = try SafeTensorsFile(path: out)
        #expect(file.metadata["sshs_model_hash"] == Self.fixture.sshsModelHash)
        #expect(file.metadata["sshs_legacy_hash"] == Self.fixture.sshsLegacyHash)
        #expect(file.metadata["zz_note"] == "ignored")
        // The stored model hash is the file's own addnet hash (A1111 may use either).
        #expect(try ModelHashes.compute(fileAt: out).addnet == Self.fixture.sshsModelHash)
        #expect(try LoRAFileWriter.expectedHashes(of: out) == written)
        // Only the final file is left.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["h.safetensors"])
    }

    @Test func a1111FileHashes() throws {
        let dir = try OpsScratch()
        let path = dir.file("one.safetensors")
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        for (name, t) in Self.tensors { writer.add(name, tensor: t) }
        try writer.write(to: path)
        let expected = Self.fixture.oneKeyFile
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == expected.size)
        let hashes = try ModelHashes.compute(fileAt: path)
        #expect(hashes.sha256 == expected.sha256)
        #expect(hashes.autoV2 == expected.autoV2)
        #expect(hashes.addnet == expected.addnet)
        #expect(hashes.addnetShort == String(expected.addnet.prefix(12)))
        #expect(hashes.legacy == expected.legacy)
        #expect(hashes.sha256 == (try SHA256.hash(fileAt: path).hex))
        // Shorter than 1 MiB: the legacy window is empty.
        let small = dir.file("small.safetensors")
        try SafeTensorsWriter.write(["a": Tensor(zeros: [4])], to: small)
        #expect(try ModelHashes.compute(fileAt: small).legacy == Self.fixture.emptyLegacy)
        // Not safetensors: no addnet hash.
        let other = dir.file("x.ckpt")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: other))
        #expect(try ModelHashes.compute(fileAt: other).addnet == nil)
    }

    struct TagCase: Decodable { let ss_tag_frequency: String; let ranked: [[TagValue]] }
    enum TagValue: Decodable, Equatable {
        case text(String), count(Int)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let n = try? c.decode(Int.self) { self = .count(n) } else { self = .text(try c.decode(String.self)) }
        }
    }

    @Test func tagRankingIsA1111s() throws {
        let cases = try JSONDecoder().decode([TagCase].self, from: Data(contentsOf: URL(fileURLWithPath: "\(opsFixtures)/tags.json")))
        #expect(cases.count == 5)
        for c in cases {
            let got = TrainingTags.ranked(metadata: ["ss_tag_frequency": c.ss_tag_frequency])
            let expected = c.ranked.map { pair -> (String, Int) in
                guard case .text(let t) = pair[0], case .count(let n) = pair[1] else { return ("", -1) }
                return (t, n)
            }
            #expect(got.map(\.tag) == expected.map(\.0), "\(c.ss_tag_frequency)")
            #expect(got.map(\.count) == expected.map(\.1), "\(c.ss_tag_frequency)")
        }
        #expect(LoRAMetadata(["ss_tag_frequency": cases[0].ss_tag_frequency]).triggerWords(limit: 2) == ["solo", "1girl"])
        #expect(LoRAMetadata(["modelspec.trigger_phrase": "sks dog"]).triggerWords() == ["sks dog"])
    }

    @Test func metadataVocabulary() throws {
        let m = LoRAMetadata(["ss_network_args": #"{"conv_dim": "8", "rs_lora": true, "n": 4}"#, "modelspec.title": "t"])
        #expect(m.networkArgs == ["conv_dim": "8", "rs_lora": "True", "n": "4"])
        #expect(m.modelSpec == ["title": "t"])
        #expect(LoRAMetadataBuilder.baseModelVersion(.sd2, vPrediction: true) == "sd_v2_v")
        #expect(LoRAMetadataBuilder.baseModelVersion(.sdxl) == "sdxl_base_v1-0")
        #expect(LoRAMetadataBuilder.alphaString([16, 16]) == "16.0" && LoRAMetadataBuilder.alphaString([1, 2]) == "Dynamic")
        #expect(LoRAMetadataBuilder.modelSpec(family: .sdxl, title: "x")["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora")
        // rs_lora is dropped for kohya output (alphas already carry the scale); sshs_* always.
        let carried = LoRAMetadataBuilder.carried(["ss_network_args": #"{"rs_lora": true, "algo": "lora"}"#, "sshs_model_hash": "x"], to: .kohya)
        #expect(carried == ["ss_network_args": #"{"algo": "lora"}"#])
    }
}
