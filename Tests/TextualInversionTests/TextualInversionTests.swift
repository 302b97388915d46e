import DreamBooth
import Foundation
import Host
import Hypernetwork
import LoRA
import SafeTensors
import Tensor
import Testing
import TextualInversion
import TorchPickle

/// Tests/TextualInversionTests/Fixtures (made by tools/gen_ti_hn_db_fixtures.py).
let tiFixtures: String = Bundle.module.resourceURL!.appendingPathComponent("Fixtures").path
/// LoRA fixtures, read in place (for detection across methods).
let loraFixtures: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("LoRATests/Fixtures").path

/// A registry with every built-in method, as the CLI's composition root registers them.
func allMethodsRegistry() throws -> AdapterRegistry {
    let registry = AdapterRegistry()
    try registerLoRAFamily(into: registry)
    try registerTextualInversion(into: registry)
    try registerHypernetwork(into: registry)
    try registerDreamBooth(into: registry)
    return registry
}

/// The file as a tensor source: the safe pickle reader for .pt/.bin, safetensors otherwise.
func openSource(_ path: String) throws -> TensorSource {
    path.hasSuffix(".safetensors") ? try SafeTensorsFile(path: path) : try TorchFile(path: path)
}

/// Bit patterns of a tensor's elements as F32.
func f32Bits(_ t: Tensor) -> [UInt32] { t.to(.f32).floats.map(\.bitPattern) }

@Suite struct TextualInversionFormatTests {
    struct Case: CustomStringConvertible {
        let file: String
        let format: String
        let widths: [Int]
        let vectors: Int
        let family: ModelFamily?
        let internalName: String?
        var description: String { file }
    }

    static let cases: [Case] = [
        Case(file: "a1111_sd1.pt", format: "a1111", widths: [768], vectors: 2, family: .sd1, internalName: "internal-name"),
        Case(file: "original_sd1.pt", format: "a1111", widths: [768], vectors: 1, family: .sd1, internalName: nil),
        Case(file: "kohya_sd2.safetensors", format: "kohya", widths: [1024], vectors: 3, family: .sd2, internalName: nil),
        Case(file: "learned_embeds.bin", format: "diffusers", widths: [768], vectors: 1, family: .sd1, internalName: "<cat-toy>"),
        Case(file: "dog_concept.safetensors", format: "diffusers", widths: [768], vectors: 2, family: .sd1, internalName: "<dog>"),
        Case(file: "sdxl_emb.safetensors", format: "sdxl", widths: [768, 1280], vectors: 2, family: .sdxl, internalName: nil),
    ]

    @Test(arguments: cases)
    func loadsThroughTheRegistry(_ c: Case) throws {
        let path = "\(tiFixtures)/\(c.file)"
        let expected = try SafeTensorsFile(path: "\(tiFixtures)/expected.safetensors")
        let adapter = try allMethodsRegistry().load(try openSource(path))
        #expect(adapter.methodIDs == ["textual-inversion"])
        #expect(adapter.format == c.format)
        #expect(adapter.baseModel == c.family)
        #expect(adapter.modules.isEmpty && adapter.contextTransforms.isEmpty)
        #expect(adapter.unclaimedKeys.isEmpty)
        try #require(adapter.embeddings.count == 1)
        let embedding = adapter.embeddings[0]
        // A1111: the prompt name is the file stem, whatever the file stores.
        #expect(embedding.name == String(c.file.split(separator: ".")[0]))
        #expect(adapter.metadata["textual_inversion.internal_name"] == c.internalName)
        #expect(embedding.vectorsByWidth.keys.sorted() == c.widths)
        let stem = String(c.file.split(separator: ".")[0])
        for width in c.widths {
            let vectors = try #require(embedding.vectorsByWidth[width])
            #expect(vectors.dtype == .f32)
            #expect(vectors.shape == [c.vectors, width])
            let reference = try expected.tensor(named: "\(stem).\(width)")
            #expect(f32Bits(vectors) == f32Bits(reference), "\(c.file) width \(width)")
        }
    }

    @Test func a1111FileKeepsItsStoredFields() throws {
        let adapter = try allMethodsRegistry().load(try openSource("\(tiFixtures)/a1111_sd1.pt"))
        #expect(adapter.metadata["step"] == "1500")
        #expect(adapter.metadata["sd_checkpoint_name"] == "'v1-5-pruned-emaonly'")
        #expect(adapter.metadata["textual_inversion.vectors"] == "2")
    }

    @Test func internalNamingUsesTheStoredName() throws {
        let registry = AdapterRegistry()
        try registry.register(TextualInversionMethod(naming: .internalName))
        let a1111 = try registry.load(try openSource("\(tiFixtures)/a1111_sd1.pt"))
        #expect(a1111.embeddings.map(\.name) == ["internal-name"])
        let diffusers = try registry.load(try openSource("\(tiFixtures)/learned_embeds.bin"))
        #expect(diffusers.embeddings.map(\.name) == ["<cat-toy>"])
        // kohya stores no name: the file stem.
        let kohya = try registry.load(try openSource("\(tiFixtures)/kohya_sd2.safetensors"))
        #expect(kohya.embeddings.map(\.name) == ["kohya_sd2"])
    }

    @Test func multipleTermsAreRefused() throws {
        let source = try openSource("\(tiFixtures)/multi_terms.pt")
        #expect(throws: TextualInversionError(file: source.path, key: "string_to_param", rule: .multipleTerms(count: 2))) {
            try allMethodsRegistry().load(source)
        }
    }

    @Test func badTensorsAreRefused() throws {
        let conv = InMemoryTensorSource(path: "x.safetensors", tensors: [("emb_params", Tensor(zeros: [1, 2, 3, 4]))])
        #expect(throws: TextualInversionError(file: "x.safetensors", key: "emb_params", rule: .badTensor(dtype: "F32", shape: [1, 2, 3, 4]))) {
            try allMethodsRegistry().load(conv)
        }
        let ints = InMemoryTensorSource(path: "y.safetensors", tensors: [("<tok>", Tensor(zeros: [2, 8], dtype: .i32))])
        #expect(throws: TextualInversionError.self) { try allMethodsRegistry().load(ints) }
        let sdxl = InMemoryTensorSource(path: "z.safetensors", tensors: [
            ("clip_l", Tensor(zeros: [2, 768])), ("clip_g", Tensor(zeros: [3, 1280])),
        ])
        #expect(throws: TextualInversionError(file: "z.safetensors", key: "", rule: .sdxlMismatch(clipL: [2, 768], clipG: [3, 1280]))) {
            try allMethodsRegistry().load(sdxl)
        }
    }

    @Test func singleVectorIsOneToken() throws {
        let values = (0..<16).map { Float($0) / 8 }
        let source = InMemoryTensorSource(path: "dir/my token.safetensors", tensors: [("<t>", Tensor(shape: [16], values: values))])
        let adapter = try allMethodsRegistry().load(source)
        let e = try #require(adapter.embeddings.first)
        #expect(e.name == "my token")
        #expect(e.vectorsByWidth[16]?.shape == [1, 16])
        #expect(e.vectorsByWidth[16]?.floats == values)
        #expect(adapter.baseModel == nil)   // no real family has width 16
    }
}

/// Every built-in method registered together: each file goes to the right one.
@Suite struct DetectionAcrossMethodsTests {
    @Test func loraWithBundledEmbeddingsStaysLoRA() throws {
        let adapter = try allMethodsRegistry().load(try SafeTensorsFile(path: "\(loraFixtures)/kohya_sd1_bundle.safetensors"))
        #expect(adapter.methodIDs == ["lora"])
        #expect(!adapter.modules.isEmpty)
        #expect(!adapter.embeddings.isEmpty)   // the bundle is the LoRA method's
    }

    @Test func loraFilesAreNotEmbeddings() throws {
        // Every LoRA-family fixture there is (their set changes with the LoRA tests).
        let files = try FileManager.default.contentsOfDirectory(atPath: loraFixtures)
            .filter { $0.hasSuffix(".safetensors") && !$0.hasSuffix(".expected.safetensors") }.sorted()
        #expect(files.count >= 5)
        for file in files {
            let source = try SafeTensorsFile(path: "\(loraFixtures)/\(file)")
            let adapter = try allMethodsRegistry().load(source)
            #expect(!adapter.methodIDs.contains("textual-inversion") && !adapter.methodIDs.contains("hypernetwork"), "\(file)")
            #expect(!adapter.modules.isEmpty && adapter.contextTransforms.isEmpty, "\(file)")
            // Embeddings only as the LoRA method's bundles.
            #expect(adapter.embeddings.isEmpty == !source.keys.contains { $0.hasPrefix("bundle_emb.") }, "\(file)")
        }
    }

    @Test func embeddingsAreNotLoRA() throws {
        let registry = try allMethodsRegistry()
        for file in ["kohya_sd2.safetensors", "dog_concept.safetensors", "sdxl_emb.safetensors", "a1111_sd1.pt"] {
            let detection = try registry.detect(try openSource("\(tiFixtures)/\(file)"))
            #expect(detection.methodIDs == ["textual-inversion"], "\(file)")
        }
    }

    @Test func aLoneModuleTensorIsNoEmbedding() throws {
        // One tensor whose key is a module's (a fragment of a LoRA or a checkpoint): nobody's.
        for key in ["lora_unet_down_blocks_0_attentions_0_proj_in.alpha", "model.diffusion_model.out.2.weight"] {
            let source = InMemoryTensorSource(path: "one.safetensors", tensors: [(key, Tensor(zeros: [4]))])
            #expect(throws: DetectionError.self) { try allMethodsRegistry().load(source) }
        }
    }

    @Test func aDifferenceFileIsDreamBoothsEvenWithOneTensor() throws {
        let source = InMemoryTensorSource(path: "d.safetensors", tensors: [("emb_params", Tensor(zeros: [2, 4]))],
                                          metadata: ["adapterhost.method": "dreambooth"])
        #expect(try allMethodsRegistry().detect(source).methodIDs == ["dreambooth"])
    }
}
