import Host
import Tensor

/// Settings of prompt conditioning (A1111's names in brackets).
public struct ConditioningOptions: Sendable, Equatable {
    /// "Clip skip" (`CLIP_stop_at_last_layers`): SD1 reads `hidden_states[-clipSkip]` through the
    /// final norm. A1111 ignores it for SD2 (always the penultimate block + `ln_final`) and SDXL
    /// (always `hidden_states[-2]` of both encoders, `sdxl_clip_l_skip` off); so does this.
    public var clipSkip: Int
    /// "Emphasis mode".
    public var emphasis: EmphasisMode
    /// "Prompt word wrap length limit" (`comma_padding_backtrack`).
    public var commaPaddingBacktrack: Int
    /// "Pad prompt/negative prompt to be same length" (`pad_cond_uncond`): the shorter of
    /// cond/uncond gets copies of the empty prompt's conditioning. Without it, the two may
    /// differ in length (A1111 then runs the UNet on them separately).
    public var padsToEqualLength: Bool

    public init(clipSkip: Int = 1, emphasis: EmphasisMode = .original, commaPaddingBacktrack: Int = 20,
                padsToEqualLength: Bool = true) {
        self.clipSkip = clipSkip
        self.emphasis = emphasis
        self.commaPaddingBacktrack = commaPaddingBacktrack
        self.padsToEqualLength = padsToEqualLength
    }
}

/// One prompt's conditioning.
public struct PromptConditioning {
    /// The UNet's cross-attention context, [chunks · 77, width] F32 (SDXL: CLIP-L's 768 then
    /// bigG's 1280 channels).
    public var context: Tensor
    /// SDXL's pooled text embedding [projection width] (bigG, first chunk), else nil.
    public var pooled: Tensor?
    /// The prompt's chunks (before any padding to the other prompt's length).
    public var chunks: [PromptChunk]
    /// Token count as A1111 shows it.
    public var tokenCount: Int

    /// 77-token chunks in `context` (padding included).
    public var chunkCount: Int { context.shape[0] / (PromptChunker.chunkLength + 2) }
}

/// Errors of prompt conditioning.
public enum ConditioningError: Error, CustomStringConvertible, Equatable {
    /// The encoders do not fit the family (count or part).
    case badEncoders(String)

    public var description: String {
        switch self {
        case .badEncoders(let reason): return "conditioning: \(reason)"
        }
    }
}

/// Prompt → conditioning as A1111 computes it (`sd_hijack_clip.py` and friends).
///
/// Per prompt: emphasis parsing and 75-token chunking (`PromptChunker`), textual-inversion
/// vectors written over the placeholders (fix offset + 1, after the start token), every
/// chunk through each encoder (SD2/bigG ids zero-padded after the first end token), the
/// family's layer (SD1: clip skip; SD2: penultimate + `ln_final`; SDXL: `hidden_states[-2]`),
/// emphasis per chunk and encoder, SDXL's two outputs joined on the channel axis, chunks
/// joined on the token axis; SDXL's pooled embedding from bigG's first chunk.
///
/// Extra-network tags (`<lora:…>`) must be removed first (Host's `A1111Prompt.removeTags`); prompt
/// editing, alternation and `AND` are other passes. Chunks of one call run through each encoder
/// as one batch. Not thread-safe (the encoders' workspaces are shared).
public final class PromptConditioner {
    public let family: ModelFamily
    public let encoders: [TextEncoder]
    public let options: ConditioningOptions
    /// Bypass adapters and embeddings (context transforms are the UNet's).
    public let hooks: GenerationHooks
    public let chunker: PromptChunker
    /// Things skipped or ignored, each said once (unknown widths, ignored clip skip, …).
    public private(set) var warnings: [String] = []

    let roles: [EncoderRole]
    let embeddings: ConditioningEmbeddings

    /// How one encoder takes part.
    struct EncoderRole {
        let encoder: TextEncoder
        let layer: TextEncoderLayer
        let padding: PromptPadding
        let pools: Bool
    }

    /// The conditioner of a model: its family's encoders, built from `weights`, with head
    /// counts and activations from its configuration (`ModelConfiguration.resolve`: the
    /// diffusers folder's own config files, `configDirectory` for a single file, else the
    /// family's standard).
    public convenience init(weights: ModelWeights, configDirectory: String? = nil, hooks: GenerationHooks = .none,
                            options: ConditioningOptions = ConditioningOptions(),
                            tokenizer: CLIPTokenizer? = nil) throws {
        let configuration = try ModelConfiguration.resolve(for: weights, configDirectory: configDirectory)
        let resolver = WeightKeyResolver(model: weights)
        let encoders = try (0..<weights.family.textEncoderCount).map {
            try TextEncoder(weights: weights, part: .textEncoder($0), headCount: configuration.textEncoderHeads[$0],
                            activation: configuration.textEncoderActivations[$0], resolver: resolver)
        }
        try self.init(family: weights.family, encoders: encoders, hooks: hooks, options: options, tokenizer: tokenizer)
    }

    /// A conditioner over `encoders` (the family's, in order: SDXL CLIP-L then bigG).
    public init(family: ModelFamily, encoders: [TextEncoder], hooks: GenerationHooks = .none,
                options: ConditioningOptions = ConditioningOptions(), tokenizer: CLIPTokenizer? = nil) throws {
        guard encoders.count == family.textEncoderCount,
              encoders.enumerated().allSatisfy({ $0.element.part == .textEncoder($0.offset) }) else {
            throw ConditioningError.badEncoders("\(family.rawValue) needs text encoders \((0..<family.textEncoderCount).map { "te\($0 + 1)" }), got \(encoders.map(\.part.description))")
        }
        self.family = family
        self.encoders = encoders
        self.options = options
        self.hooks = hooks
        switch family {
        case .sd1:
            roles = [EncoderRole(encoder: encoders[0], layer: .clipSkip(options.clipSkip), padding: .endOfText, pools: false)]
        case .sd2:
            roles = [EncoderRole(encoder: encoders[0], layer: .penultimateNormalized, padding: .zero, pools: false)]
        case .sdxl:
            roles = [EncoderRole(encoder: encoders[0], layer: .penultimate, padding: .endOfText, pools: false),
                     EncoderRole(encoder: encoders[1], layer: .penultimate, padding: .zero, pools: true)]
        }
        if options.clipSkip > 1 && family != .sd1 {
            warnings.append("clip skip \(options.clipSkip) has no effect on \(family.rawValue) (A1111 ignores it there)")
        }
        let tokenizer = try tokenizer ?? CLIPTokenizer.bundled()
        let embeddings = ConditioningEmbeddings(hooks.embeddings, widths: encoders.map(\.configuration.width),
                                                tokenizer: tokenizer)
        self.embeddings = embeddings
        warnings += embeddings.warnings
        chunker = PromptChunker(tokenizer: tokenizer, commaPaddingBacktrack: options.commaPaddingBacktrack,
                                parsesEmphasis: options.emphasis.parsesSyntax,
                                embeddings: embeddings.isEmpty ? nil : embeddings.vocabulary)
    }

    /// Width of the conditioning (sum of the encoders' widths).
    public var contextWidth: Int { encoders.reduce(0) { $0 + $1.configuration.width } }

    /// The conditioning of one prompt.
    public func condition(_ prompt: String) throws -> PromptConditioning {
        let (chunks, count) = try chunker.chunks(for: prompt)
        let (contexts, pooled) = try encode(chunks)
        return PromptConditioning(context: Self.joined(contexts), pooled: pooled.first ?? nil, chunks: chunks,
                                  tokenCount: count)
    }

    /// The conditioning of a prompt and its negative prompt, for one classifier-free-guidance
    /// batch: both encoded together; on SDXL an empty negative prompt gives zeros (context and
    /// pooled: A1111's `force_zero_embeddings` for an all-empty negative batch); with
    /// `padsToEqualLength` the shorter one is extended with the empty prompt's conditioning.
    public func condition(prompt: String, negative: String) throws -> (cond: PromptConditioning, uncond: PromptConditioning) {
        let (condChunks, condCount) = try chunker.chunks(for: prompt)
        let (uncondChunks, uncondCount) = try chunker.chunks(for: negative)
        let zeroUncond = family == .sdxl && negative.isEmpty
        let needsPadding = options.padsToEqualLength && condChunks.count != uncondChunks.count
        var batch = condChunks
        if !zeroUncond { batch += uncondChunks }
        if needsPadding { batch.append(PromptChunker.emptyChunk()) }
        let (contexts, pooled) = try encode(batch)

        var condContexts = Array(contexts[0..<condChunks.count])
        var uncondContexts: [Tensor]
        var uncondPooled: Tensor?
        if zeroUncond {
            uncondContexts = uncondChunks.map { _ in Tensor(zeros: [PromptChunker.chunkLength + 2, contextWidth]) }
            uncondPooled = pooled[0].map { Tensor(zeros: $0.shape) }
        } else {
            uncondContexts = Array(contexts[condChunks.count..<(condChunks.count + uncondChunks.count)])
            uncondPooled = pooled[condChunks.count]
        }
        if needsPadding, let empty = contexts.last {
            while condContexts.count < uncondContexts.count { condContexts.append(empty) }
            while uncondContexts.count < condContexts.count { uncondContexts.append(empty) }
        }
        return (PromptConditioning(context: Self.joined(condContexts), pooled: pooled[0], chunks: condChunks,
                                   tokenCount: condCount),
                PromptConditioning(context: Self.joined(uncondContexts), pooled: uncondPooled, chunks: uncondChunks,
                                   tokenCount: uncondCount))
    }

    /// Each chunk's conditioning [77, width] and pooled embedding (nil without a pooling encoder).
    func encode(_ chunks: [PromptChunk]) throws -> (contexts: [Tensor], pooled: [Tensor?]) {
        var perEncoder: [[Tensor]] = []
        var pooled = [Tensor?](repeating: nil, count: chunks.count)
        for role in roles {
            let width = role.encoder.configuration.width
            let tokens = chunks.map { $0.encoderTokens(padding: role.padding) }
            var injections: [EmbeddingInjection] = []
            for (index, chunk) in chunks.enumerated() {
                for fix in chunk.fixes {
                    // A1111's fix offset counts prompt tokens; the start token comes first.
                    if let vectors = embeddings.vectors(fix.embedding, width: width) {
                        injections.append(EmbeddingInjection(sequence: index, position: fix.offset + 1, vectors: vectors))
                    }
                }
            }
            let output = try role.encoder.encode(tokens: tokens, injections: injections, layer: role.layer,
                                                 pooledPositions: role.pools ? TextEncoder.pooledPositions(tokens) : nil,
                                                 hooks: hooks)
            let hidden = output.hidden
            perEncoder.append(chunks.enumerated().map { index, chunk in
                options.emphasis.apply(to: hidden[chunk: index], multipliers: chunk.multipliers)
            })
            if let projected = output.projected ?? output.pooled {
                for index in chunks.indices { pooled[index] = projected.sliced(axis: 0, index..<index + 1).reshaped([projected.shape[1]]).contiguous() }
            }
        }
        let contexts = chunks.indices.map { index in
            perEncoder.count == 1 ? perEncoder[0][index] : Tensor.concat(perEncoder.map { $0[index] }, axis: 1)
        }
        return (contexts, pooled)
    }

    /// Chunks [77, W] stacked on the token axis.
    static func joined(_ contexts: [Tensor]) -> Tensor {
        contexts.count == 1 ? contexts[0] : Tensor.concat(contexts, axis: 0)
    }
}

extension Tensor {
    /// Sequence `index` of a [B, T, W] tensor as a contiguous [T, W] tensor.
    fileprivate subscript(chunk index: Int) -> Tensor {
        sliced(axis: 0, index..<index + 1).reshaped([shape[1], shape[2]]).contiguous()
    }
}
