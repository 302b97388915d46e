import Foundation
import Host
import SafeTensors
import Testing
import Tensor
@testable import Runtime

/// `Fixtures/textencoder/conditioning.json` (tools/gen_text_encoder_fixtures.py).
private struct ConditioningFixture: Decodable {
    struct Case: Decodable {
        let name: String
        let family: String
        let prompt: String
        let negative: String
        let clip_skip: Int
        let emphasis: String
        let embeddings: [String]
        let chunks: [Chunk]
        let negative_chunk_count: Int
    }
    struct Chunk: Decodable {
        let tokens: [Int32]
        let multipliers: [Double]
        let fixes: [Fix]
    }
    /// `[offset, name]`.
    struct Fix: Decodable {
        let offset: Int
        let name: String
        init(from decoder: Decoder) throws {
            var c = try decoder.unkeyedContainer()
            offset = try c.decode(Int.self)
            name = try c.decode(String.self)
        }
    }
    /// (A, B, C) of each encoder's token table.
    let tables: [String: [Int]]
    let cases: [Case]
}

/// The prompt encoders of the fixtures: tiny CLIPs over the real 49408-token vocabulary whose
/// token table is a formula (so it need not be stored): ((i·A + j·B + C) mod 2001 − 1000) / 2000.
enum PromptEncoderFixtures {
    static func tokenTable(_ abc: [Int], width: Int) -> Tensor {
        var values = [Float](repeating: 0, count: CLIPTokenizer.vocabularySize * width)
        for i in 0..<CLIPTokenizer.vocabularySize {
            for j in 0..<width {
                // Integer arithmetic, one exact conversion, one correctly rounded F32 division:
                // bit-identical to the script's torch computation.
                values[i * width + j] = Float((i * abc[0] + j * abc[1] + abc[2]) % 2001 - 1000) / Float(2000)
            }
        }
        return Tensor(shape: [CLIPTokenizer.vocabularySize, width], values: values)
    }

    /// The in-memory model of `family` (`prompt_<family>.safetensors` plus its token tables).
    static func model(_ family: ModelFamily, tables: [String: [Int]]) throws -> ModelWeights {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let file = try SafeTensorsFile(path: base.appendingPathComponent("textencoder/prompt_\(family.rawValue).safetensors").path)
        var keys = file.names
        var tensors: [String: Tensor] = [:]
        for key in keys { tensors[key] = try file.tensor(named: key) }
        let added: [(String, String, Int)]
        let naming: ModelNaming
        switch family {
        case .sd1:
            naming = .diffusers
            added = [("text_encoder.text_model.embeddings.token_embedding.weight", "sd1", 16)]
        case .sd2:
            naming = .singleFile
            added = [("cond_stage_model.model.token_embedding.weight", "sd2", 8)]
        case .sdxl:
            naming = .singleFile
            added = [("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "sdxl.0", 16),
                     ("conditioner.embedders.1.model.token_embedding.weight", "sdxl.1", 8)]
        }
        for (key, table, width) in added {
            keys.append(key)
            tensors[key] = tokenTable(try #require(tables[table]), width: width)
        }
        return ModelWeights(path: "prompt_\(family.rawValue)", keys: keys, tensors: tensors, naming: naming, family: family)
    }

    /// The fixture's two embeddings: `emb_one` (2 vectors of widths 16 and 8) and `emb_sd1`
    /// (1 vector of width 16 only).
    static func embeddings(_ tensors: [String: Tensor]) throws -> [TokenEmbedding] {
        try [("emb_one", [16, 8]), ("emb_sd1", [16])].map { name, widths in
            var byWidth: [Int: Tensor] = [:]
            for w in widths {
                let vectors = try #require(tensors["embedding.\(name).\(w)"])
                byWidth[w] = vectors
            }
            return TokenEmbedding(name: name, vectorsByWidth: byWidth)
        }
    }

    static func conditioner(_ family: ModelFamily, tables: [String: [Int]], embeddings: [TokenEmbedding],
                            options: ConditioningOptions = ConditioningOptions()) throws -> PromptConditioner {
        let model = try model(family, tables: tables)
        let encoders = try (0..<family.textEncoderCount).map {
            try TextEncoder(weights: model, part: .textEncoder($0), headCount: 4)
        }
        return try PromptConditioner(family: family, encoders: encoders, hooks: GenerationHooks(embeddings: embeddings),
                                     options: options)
    }
}

@Suite("Prompt conditioning vs A1111's formulas")
struct ConditioningTests {
    /// Every case: chunks as the script's A1111 chunker made them, cond/uncond/pooled within
    /// 1e-4 relative of the reference (emphasis with mean restore, TI, clip skip, SD2 zero
    /// padding and penultimate + ln_final, SDXL concat/pooled/zero negative, padding).
    @Test("cond, uncond and pooled match the reference for every case")
    func cases() throws {
        let fixture = try TextEncoderFixtures.json("conditioning.json", as: ConditioningFixture.self)
        let expected = try NetworkFixtures.tensors("textencoder/conditioning.safetensors")
        let embeddings = try PromptEncoderFixtures.embeddings(expected)
        for c in fixture.cases {
            let family = try #require(ModelFamily(rawValue: c.family))
            let options = ConditioningOptions(clipSkip: c.clip_skip, emphasis: try #require(EmphasisMode(rawValue: c.emphasis)))
            let conditioner = try PromptEncoderFixtures.conditioner(family, tables: fixture.tables, embeddings: embeddings,
                                                                    options: options)
            let (cond, uncond) = try conditioner.condition(prompt: c.prompt, negative: c.negative)
            #expect(cond.chunks.count == c.chunks.count, "\(c.name): chunk count")
            for (mine, want) in zip(cond.chunks, c.chunks) {
                #expect(mine.tokens == want.tokens, "\(c.name): tokens")
                #expect(mine.multipliers == want.multipliers, "\(c.name): multipliers")
                #expect(mine.fixes == want.fixes.map { EmbeddingFix(offset: $0.offset, embedding: $0.name) }, "\(c.name): fixes")
            }
            #expect(uncond.chunks.count == c.negative_chunk_count, "\(c.name): negative chunk count")
            let wantCond = try #require(expected["\(c.name).cond"]), wantUncond = try #require(expected["\(c.name).uncond"])
            #expect(cond.context.shape == wantCond.shape && uncond.context.shape == wantUncond.shape,
                    "\(c.name): shapes \(cond.context.shape) \(uncond.context.shape)")
            guard cond.context.shape == wantCond.shape, uncond.context.shape == wantUncond.shape else { continue }
            let condError = NetworkFixtures.relativeError(cond.context, wantCond)
            #expect(condError < 1e-4, "\(c.name) cond: \(condError)")
            if wantUncond.floats.allSatisfy({ $0 == 0 }) {
                #expect(uncond.context.floats.allSatisfy { $0 == 0 }, "\(c.name): uncond must be zeros")
            } else {
                let error = NetworkFixtures.relativeError(uncond.context, wantUncond)
                #expect(error < 1e-4, "\(c.name) uncond: \(error)")
            }
            if let wantPooled = expected["\(c.name).pooled"] {
                let pooled = try #require(cond.pooled, "\(c.name): no pooled output")
                #expect(NetworkFixtures.relativeError(pooled, wantPooled) < 1e-4, "\(c.name) pooled")
                let wantUncondPooled = try #require(expected["\(c.name).uncond_pooled"])
                let uncondPooled = try #require(uncond.pooled)
                if wantUncondPooled.floats.allSatisfy({ $0 == 0 }) {
                    #expect(uncondPooled.floats.allSatisfy { $0 == 0 }, "\(c.name): uncond pooled must be zeros")
                } else {
                    #expect(NetworkFixtures.relativeError(uncondPooled, wantUncondPooled) < 1e-4, "\(c.name) uncond pooled")
                }
            } else {
                #expect(cond.pooled == nil)
            }
        }
    }

    @Test("an SD1 embedding is skipped on SDXL's bigG with a warning; a width no encoder has is not loaded")
    func embeddingWidths() throws {
        let fixture = try TextEncoderFixtures.json("conditioning.json", as: ConditioningFixture.self)
        let embeddings = try PromptEncoderFixtures.embeddings(NetworkFixtures.tensors("textencoder/conditioning.safetensors"))
        let xl = try PromptEncoderFixtures.conditioner(.sdxl, tables: fixture.tables, embeddings: embeddings)
        #expect(xl.warnings.count == 1 && xl.warnings[0].contains("emb_sd1") && xl.warnings[0].contains("width 8"),
                "\(xl.warnings)")
        let used = try xl.condition("emb_sd1")
        #expect(used.chunks[0].fixes == [EmbeddingFix(offset: 0, embedding: "emb_sd1")])

        let sd2 = try PromptEncoderFixtures.conditioner(.sd2, tables: fixture.tables, embeddings: embeddings)
        #expect(sd2.warnings.count == 1 && sd2.warnings[0].contains("not loaded"), "\(sd2.warnings)")
        let text = try sd2.condition("emb_sd1")
        #expect(text.chunks[0].fixes.isEmpty)
        #expect(text.chunks[0].tokens[1...3] != [0, 0, 0][...], "the name stays prompt text")
    }

    @Test("clip skip is ignored (with a warning) on SD2 and SDXL, as A1111 does")
    func clipSkipIgnored() throws {
        let fixture = try TextEncoderFixtures.json("conditioning.json", as: ConditioningFixture.self)
        let plain = try PromptEncoderFixtures.conditioner(.sd2, tables: fixture.tables, embeddings: [])
        let skipped = try PromptEncoderFixtures.conditioner(.sd2, tables: fixture.tables, embeddings: [],
                                                            options: ConditioningOptions(clipSkip: 2))
        #expect(skipped.warnings.contains { $0.contains("clip skip") })
        #expect(try plain.condition("a house").context.floats == skipped.condition("a house").context.floats)
    }

    @Test("without padding cond and uncond keep their own lengths")
    func noPadding() throws {
        let fixture = try TextEncoderFixtures.json("conditioning.json", as: ConditioningFixture.self)
        let conditioner = try PromptEncoderFixtures.conditioner(.sd1, tables: fixture.tables, embeddings: [],
                                                                options: ConditioningOptions(padsToEqualLength: false))
        let long = Array(repeating: "word", count: 80).joined(separator: " ")
        let (cond, uncond) = try conditioner.condition(prompt: long, negative: "")
        #expect(cond.context.shape == [154, 16] && uncond.context.shape == [77, 16])
        #expect(cond.chunkCount == 2 && uncond.chunkCount == 1)
        // The pair is encoded as one batch: each prompt alone gives the same numbers.
        #expect(NetworkFixtures.relativeError(cond.context, try conditioner.condition(long).context) < 1e-6)
        #expect(NetworkFixtures.relativeError(uncond.context, try conditioner.condition("").context) < 1e-6)
    }
}

@Suite("Emphasis")
struct EmphasisTests {
    /// A1111's EmphasisOriginal in plain F64: z·m, then · mean(z)/mean(z·m).
    @Test("Original rescales to the original mean; No norm only multiplies; Ignore and None leave z")
    func formulas() {
        let z = NetworkFixtures.random([5, 3], seed: 3)
        let m: [Double] = [1, 1.3, 0.9090909090909091, 1.21, 1]
        let values = z.floats.map(Double.init)
        let weighted = values.enumerated().map { $0.element * m[$0.offset / 3] }
        let originalMean = Double(Float(values.reduce(0, +) / 15))
        let scale = originalMean / (weighted.reduce(0, +) / 15)
        let original = EmphasisMode.original.apply(to: z, multipliers: m).floats
        #expect(original == weighted.map { Float($0 * scale) })
        #expect(abs(original.map(Double.init).reduce(0, +) / 15 - originalMean) < 1e-6)
        #expect(EmphasisMode.noNorm.apply(to: z, multipliers: m).floats == weighted.map { Float($0) })
        #expect(EmphasisMode.ignore.apply(to: z, multipliers: m).floats == z.floats)
        #expect(EmphasisMode.none.apply(to: z, multipliers: m).floats == z.floats)
        #expect(EmphasisMode.original.apply(to: z, multipliers: [1, 1, 1, 1, 1]).floats == z.floats)
    }
}
