import Foundation
import Host
import SafeTensors
import Tensor
import Testing
import TextualInversion
import TorchPickle
@testable import Runtime

/// `Fixtures/adapters6` (tools/gen_adapter_conformance_fixtures.py): real adapter files and the
/// peers' outputs for them.
enum AdapterConformanceFixtures {
    static func path(_ file: String) throws -> String {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return base.appendingPathComponent("adapters6/\(file)").path
    }

    /// The file as a tensor source: the safe pickle reader for .pt/.bin, safetensors otherwise.
    static func source(_ file: String) throws -> TensorSource {
        let p = try path(file)
        return p.hasSuffix(".safetensors") ? try SafeTensorsFile(path: p) : try TorchFile(path: p)
    }

    static func json<T: Decodable>(_ file: String, as type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: try path(file))))
    }

    /// `adapters6/<file>` tensors as F32.
    static func tensors(_ file: String) throws -> [String: Tensor] {
        try NetworkFixtures.tensors("adapters6/\(file)")
    }
}

/// `ti.json`.
private struct TIConformanceFixture: Decodable {
    struct Case: Decodable {
        let name: String
        let family: String
        let prompt: String
        let negative: String
        /// The family's embedding files (prompt name = file stem).
        let files: [String]
        /// Embedding names the prompts use.
        let used: [String]
        let chunks: [Chunk]
        let negative_chunks: [Chunk]
    }
    struct Chunk: Decodable {
        let tokens: [Int32]
        let multipliers: [Double]
        /// `[offset, name]` pairs.
        let fixes: [Fix]
    }
    struct Fix: Decodable {
        let offset: Int
        let name: String
        init(from decoder: Decoder) throws {
            var c = try decoder.unkeyedContainer()
            offset = try c.decode(Int.self)
            name = try c.decode(String.self)
        }
    }
    /// (A, B, C) of each prompt encoder's formula token table.
    let tables: [String: [Int]]
    /// Vectors per embedding (A1111's count: SDXL clip_g's).
    let vector_counts: [String: Int]
    let cases: [Case]

    static func load() throws -> TIConformanceFixture {
        try AdapterConformanceFixtures.json("ti.json", as: TIConformanceFixture.self)
    }
}

/// Textual Inversion end to end: every file format through the registry, its `TokenEmbedding`
/// through `GenerationHooks(stack:)` into the runtime's `PromptConditioner`, against
/// transformers' CLIP encoders fed the vectors through `inputs_embeds` with A1111's chunking
/// and emphasis computed by the generator script.
@Suite("Adapter conformance: Textual Inversion files → prompt conditioning")
struct AdapterConformanceTITests {
    /// The embedding adapters of `files`, loaded as a user's would be (registry detection).
    static func loadEmbeddings(_ files: [String]) throws -> [Adapter] {
        let registry = AdapterRegistry()
        try registerTextualInversion(into: registry)
        return try files.map { try registry.load(AdapterConformanceFixtures.source($0)) }
    }

    /// The runtime conditioner of the fixture's tiny `family` encoders with `adapters` applied.
    static func conditioner(_ family: ModelFamily, tables: [String: [Int]], adapters: [Adapter]) throws -> PromptConditioner {
        let model = try PromptEncoderFixtures.model(family, tables: tables)
        let encoders = try (0..<family.textEncoderCount).map {
            try TextEncoder(weights: model, part: .textEncoder($0), headCount: 4)
        }
        let hooks = GenerationHooks(stack: adapters.map { AdapterApplication(adapter: $0, weight: 1) })
        return try PromptConditioner(family: family, encoders: encoders, hooks: hooks)
    }

    fileprivate static func expectChunks(_ mine: [PromptChunk], _ want: [TIConformanceFixture.Chunk], _ label: String) {
        #expect(mine.count == want.count, "\(label): \(mine.count) chunks, reference \(want.count)")
        for (index, (m, w)) in zip(mine, want).enumerated() {
            #expect(m.tokens == w.tokens, "\(label) chunk \(index): tokens")
            #expect(m.multipliers == w.multipliers, "\(label) chunk \(index): multipliers")
            #expect(m.fixes == w.fixes.map { EmbeddingFix(offset: $0.offset, embedding: $0.name) },
                    "\(label) chunk \(index): fixes \(m.fixes)")
        }
    }

    @Test("Each file loads through the registry as one embedding named after its file stem")
    func filesLoad() throws {
        let fixture = try TIConformanceFixture.load()
        for c in fixture.cases {
            for (file, adapter) in zip(c.files, try Self.loadEmbeddings(c.files)) {
                let stem = String(file[..<file.lastIndex(of: ".")!])
                #expect(adapter.methodIDs == ["textual-inversion"] && adapter.unclaimedKeys.isEmpty, "\(file)")
                try #require(adapter.embeddings.count == 1, "\(file)")
                let embedding = adapter.embeddings[0]
                #expect(embedding.name == stem)
                let widths: [Int] = c.family == "sd1" ? [16] : c.family == "sd2" ? [8] : [8, 16]
                #expect(embedding.vectorsByWidth.keys.sorted() == widths, "\(file): widths")
                for (_, vectors) in embedding.vectorsByWidth {
                    #expect(vectors.dtype == .f32 && vectors.shape[0] == fixture.vector_counts[stem], "\(file): \(vectors.shape)")
                }
            }
        }
    }

    /// Chunks identical to the script's A1111 chunking; cond, uncond (and SDXL pooled) within
    /// 1e-4 relative (max |Δ| / max |reference|).
    @Test("Conditioning with TI files matches transformers via inputs_embeds (emphasis, chunk boundary, SD1/SD2/SDXL)",
          arguments: ["sd1_formats", "sd1_short", "sd2_formats", "sdxl_formats"])
    func conditioning(_ name: String) throws {
        let fixture = try TIConformanceFixture.load()
        let c = try #require(fixture.cases.first { $0.name == name })
        let expected = try AdapterConformanceFixtures.tensors("ti_expected.safetensors")
        let family = try #require(ModelFamily(rawValue: c.family))
        let conditioner = try Self.conditioner(family, tables: fixture.tables, adapters: Self.loadEmbeddings(c.files))
        #expect(conditioner.warnings.isEmpty, "\(conditioner.warnings)")

        let (cond, uncond) = try conditioner.condition(prompt: c.prompt, negative: c.negative)
        Self.expectChunks(cond.chunks, c.chunks, "\(name) prompt")
        Self.expectChunks(uncond.chunks, c.negative_chunks, "\(name) negative")
        let usedNames = Set((cond.chunks + uncond.chunks).flatMap { $0.fixes.map(\.embedding) })
        #expect(usedNames == Set(c.used), "\(name): embeddings placed \(usedNames.sorted())")

        let wantCond = try #require(expected["\(name).cond"]), wantUncond = try #require(expected["\(name).uncond"])
        try #require(cond.context.shape == wantCond.shape && uncond.context.shape == wantUncond.shape,
                     "\(name): shapes \(cond.context.shape) / \(uncond.context.shape) vs \(wantCond.shape) / \(wantUncond.shape)")
        let condError = NetworkFixtures.relativeError(cond.context, wantCond)
        let uncondError = NetworkFixtures.relativeError(uncond.context, wantUncond)
        #expect(condError < 1e-4, "\(name) cond: relative error \(condError)")
        #expect(uncondError < 1e-4, "\(name) uncond: relative error \(uncondError)")
        var report = "\(name): cond \(condError), uncond \(uncondError)"
        if let wantPooled = expected["\(name).pooled"] {
            let pooled = try #require(cond.pooled), uncondPooled = try #require(uncond.pooled)
            let pooledError = NetworkFixtures.relativeError(pooled, wantPooled)
            let uncondPooledError = NetworkFixtures.relativeError(uncondPooled, try #require(expected["\(name).uncond_pooled"]))
            #expect(pooledError < 1e-4, "\(name) pooled: relative error \(pooledError)")
            #expect(uncondPooledError < 1e-4, "\(name) uncond pooled: relative error \(uncondPooledError)")
            report += ", pooled \(pooledError), uncond pooled \(uncondPooledError)"
        } else {
            #expect(cond.pooled == nil)
        }
        print("TI conformance \(report)")
    }

    /// The comparison sees the vectors: the embedding moved to the second chunk, with other
    /// vectors, no longer matches (so the positions and values above are really checked).
    @Test("Changing the vectors of the embedding moved across the chunk boundary breaks the match")
    func vectorsMatter() throws {
        let fixture = try TIConformanceFixture.load()
        let c = try #require(fixture.cases.first { $0.name == "sd1_formats" })
        let expected = try AdapterConformanceFixtures.tensors("ti_expected.safetensors")
        let adapters = try Self.loadEmbeddings(c.files).map { adapter -> Adapter in
            guard adapter.embeddings[0].name == "embkohya" else { return adapter }
            let changed = adapter.embeddings[0].vectorsByWidth.mapValues { $0.scaled(by: 1.5) }
            return Adapter(path: adapter.path, methodIDs: adapter.methodIDs, format: adapter.format, baseModel: nil,
                           metadata: [:], modules: [], embeddings: [TokenEmbedding(name: "embkohya", vectorsByWidth: changed)])
        }
        let conditioner = try Self.conditioner(.sd1, tables: fixture.tables, adapters: adapters)
        let (cond, _) = try conditioner.condition(prompt: c.prompt, negative: c.negative)
        let want = try #require(expected["sd1_formats.cond"])
        // Only the second chunk holds embkohya: the first stays, the second moves away.
        let rows = PromptChunker.chunkLength + 2, width = want.shape[1]
        let first = { (t: Tensor) in t.sliced(axis: 0, 0..<rows).contiguous() }
        let second = { (t: Tensor) in t.sliced(axis: 0, rows..<(2 * rows)).contiguous() }
        #expect(first(cond.context).shape == [rows, width])
        #expect(NetworkFixtures.relativeError(first(cond.context), first(want)) < 1e-4)
        #expect(NetworkFixtures.relativeError(second(cond.context), second(want)) > 1e-3)
    }
}
