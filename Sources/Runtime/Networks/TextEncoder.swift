import CKernels
import Host
import Tensor

/// Which hidden state an encoder call returns.
public struct TextEncoderLayer: Sendable, Equatable {
    /// transformers' `hidden_states[-fromEnd]`: 1 is the last block's output, 2 the
    /// penultimate block's, …, `layerCount + 1` the embeddings.
    public var fromEnd: Int
    /// Whether `final_layer_norm` (open_clip's `ln_final`) is applied to it.
    public var appliesFinalNorm: Bool

    public init(fromEnd: Int, appliesFinalNorm: Bool) {
        self.fromEnd = fromEnd
        self.appliesFinalNorm = appliesFinalNorm
    }

    /// `last_hidden_state`: the last block, normalised (SD1 without clip skip).
    public static let last = TextEncoderLayer(fromEnd: 1, appliesFinalNorm: true)
    /// `hidden_states[-2]` as it is (SDXL, both encoders).
    public static let penultimate = TextEncoderLayer(fromEnd: 2, appliesFinalNorm: false)
    /// `hidden_states[-2]` then the final norm (SD2: ldm's FrozenOpenCLIPEmbedder
    /// `layer="penultimate"`; SD1 with clip skip 2).
    public static let penultimateNormalized = TextEncoderLayer(fromEnd: 2, appliesFinalNorm: true)

    /// A1111's "Clip skip" n (`CLIP_stop_at_last_layers`) for SD1: `hidden_states[-n]` through
    /// the final norm (n = 1: `last_hidden_state`).
    public static func clipSkip(_ n: Int) -> TextEncoderLayer { TextEncoderLayer(fromEnd: max(1, n), appliesFinalNorm: true) }
}

/// Textual-inversion vectors written over the token embeddings of one sequence, from
/// `position` on (A1111's `EmbeddingsWithFixes`: vectors that would run past the sequence's
/// end are dropped).
public struct EmbeddingInjection {
    /// Index of the sequence in the batch.
    public var sequence: Int
    /// Position (0-based, start token included) of the first vector.
    public var position: Int
    /// The vectors, [count, width] (any float dtype).
    public var vectors: Tensor

    public init(sequence: Int, position: Int, vectors: Tensor) {
        self.sequence = sequence
        self.position = position
        self.vectors = vectors
    }
}

/// What an encoder call returns.
public struct TextEncoderOutput {
    /// The requested hidden state, [B, T, width] F32.
    public var hidden: Tensor
    /// `final_layer_norm(last block)` at the pooled positions, [B, width] (when asked).
    public var pooled: Tensor?
    /// `pooled · text_projectionᵀ`, [B, projection] (when asked and the model has one:
    /// SDXL's bigG gives the UNet's pooled text embedding this way).
    public var projected: Tensor?
}

/// A CLIP text transformer (transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`,
/// open_clip's text tower): token + position embeddings, pre-LN blocks with causal
/// self-attention, final LayerNorm, optional projection of the pooled token.
///
/// Reads every tensor from `ModelWeights` at each call through the runtime's `WeightLoader`
/// (single files with HF CLIP-L keys or open_clip keys with fused q/k/v, diffusers folders with
/// or without the `text_model.` level): merged-mode patches are seen by the next call, F32
/// weights are used in place and F16/BF16 ones widened per layer. Bypass-mode adapters and
/// textual-inversion vectors come with each call. One call at a time (shared workspace).
public final class TextEncoder {
    public let weights: ModelWeights
    /// `.textEncoder(0)` or `.textEncoder(1)`.
    public let part: ModelPart
    public let configuration: TextEncoderConfiguration
    /// Scratch reused across calls.
    public let workspace = Workspace()

    let tokenTable: Parameter
    let positionTable: Parameter
    let blocks: [TextEncoderBlock]
    let finalNorm: LayerNorm
    let projection: Linear?

    /// The encoder `part` of `weights`; `headCount`/`activation` override what the model's
    /// configuration (or the released models' defaults) say — tiny test models need that.
    public init(weights: ModelWeights, part: ModelPart, headCount: Int? = nil, activation: Activation? = nil,
                resolver: WeightKeyResolver? = nil) throws {
        try BLAS.ensureLoaded()
        let root = WeightLoader(resolver: resolver ?? WeightKeyResolver(model: weights), component: part)
        let c = try TextEncoderConfiguration.detect(root: root, model: weights, part: part, headCount: headCount,
                                                    activation: activation)
        self.weights = weights
        self.part = part
        self.configuration = c
        let text = root.child("text_model")
        tokenTable = try text.parameter("embeddings.token_embedding.weight")
        positionTable = try text.parameter("embeddings.position_embedding.weight")
        blocks = try (0..<c.layerCount).map { try TextEncoderBlock(text.child("encoder.layers", $0), configuration: c) }
        finalNorm = try LayerNorm(text.child("final_layer_norm"), eps: c.layerNormEps)
        projection = try root.contains("text_projection.weight") ? Linear(root.child("text_projection")) : nil
    }

    /// Encodes a batch of equally long token sequences.
    ///
    /// - `injections`: textual-inversion vectors replacing token embeddings (width must be
    ///   the encoder's).
    /// - `layer`: which hidden state to return.
    /// - `pooledPositions`: one position per sequence (the end-of-text token) to pool at; the
    ///   pooled output needs every block, whatever `layer` is.
    public func encode(tokens: [[Int32]], injections: [EmbeddingInjection] = [], layer: TextEncoderLayer = .last,
                       pooledPositions: [Int]? = nil, hooks: GenerationHooks = .none) throws -> TextEncoderOutput {
        let c = configuration
        let batch = tokens.count
        guard batch > 0, let length = tokens.first?.count, length > 0 else {
            throw TextEncoderError.badInput("no tokens to encode")
        }
        guard tokens.allSatisfy({ $0.count == length }), length <= c.positionCount else {
            throw TextEncoderError.badInput("sequences must share one length ≤ \(c.positionCount); got lengths \(Set(tokens.map(\.count)).sorted())")
        }
        guard (1...(c.layerCount + 1)).contains(layer.fromEnd) else {
            throw TextEncoderError.badInput("hidden_states[-\(layer.fromEnd)] does not exist: the encoder has \(c.layerCount) blocks")
        }
        if let pooledPositions {
            guard pooledPositions.count == batch, pooledPositions.allSatisfy({ (0..<length).contains($0) }) else {
                throw TextEncoderError.badInput("pooled positions \(pooledPositions) do not give one position < \(length) per sequence")
            }
        }
        for injection in injections {
            guard (0..<batch).contains(injection.sequence), (0..<length).contains(injection.position),
                  injection.vectors.rank == 2, injection.vectors.shape[1] == c.width else {
                throw TextEncoderError.badInput("embedding vectors \(injection.vectors.shape) at sequence \(injection.sequence), position \(injection.position) do not fit \(batch) sequences of \(length) tokens of width \(c.width)")
            }
        }

        return try workspace.exclusive {
            var h = try embed(tokens, injections: injections)
            // hidden_states[i] is the output after i blocks; [-n] is index layerCount + 1 - n.
            let wanted = c.layerCount + 1 - layer.fromEnd
            let needed = pooledPositions == nil ? wanted : c.layerCount
            var selected = wanted == 0 ? h : nil
            for index in 0..<needed {
                h = try blocks[index](h, hooks: hooks, workspace: workspace)
                if index + 1 == wanted { selected = h }
            }
            var hidden = selected!
            var finalNormed: Tensor?
            if layer.appliesFinalNorm {
                hidden = try finalNorm(hidden)
                if wanted == c.layerCount { finalNormed = hidden }
            }
            var output = TextEncoderOutput(hidden: hidden, pooled: nil, projected: nil)
            if let pooledPositions {
                let last = try finalNormed ?? finalNorm(h)
                let pooled = Self.gatherRows(last, positions: pooledPositions)
                output.pooled = pooled
                output.projected = try projection.map { try $0(pooled, hooks: hooks, workspace: workspace) }
            }
            return output
        }
    }

    /// Token embeddings (with injected vectors) plus position embeddings, [B, T, W] F32.
    func embed(_ tokens: [[Int32]], injections: [EmbeddingInjection]) throws -> Tensor {
        let c = configuration
        let (batch, length, width) = (tokens.count, tokens[0].count, c.width)
        for (s, row) in tokens.enumerated() {
            if let bad = row.first(where: { $0 < 0 || Int($0) >= c.vocabularySize }) {
                throw TextEncoderError.badInput("token id \(bad) in sequence \(s) is outside the vocabulary of \(c.vocabularySize)")
            }
        }
        let out = Tensor(uninitialized: [batch, length, width])
        let dst = out.f32Pointer
        let table = try tokenTable.current()
        // Rows of the (possibly F16, possibly mapped) table are widened one at a time: a
        // prompt reads 77 of its 49408 rows.
        try copyRows(of: table, ids: tokens.flatMap { $0 }, into: dst, width: width)
        for injection in injections {
            let vectors = injection.vectors.contiguousF32
            let count = min(vectors.shape[0], length - injection.position)
            vectors.withFloats { v in
                let row = dst + (injection.sequence * length + injection.position) * width
                row.update(from: v.baseAddress!, count: count * width)
            }
        }
        let positions = try positionTable.current().sliced(axis: 0, 0..<length).contiguousF32
        positions.withFloats { p in
            for s in 0..<batch {
                ah_nn_add_inplace(dst + s * length * width, p.baseAddress!, length * width)
            }
        }
        return out
    }

    /// out[i] = table[ids[i]] as F32.
    private func copyRows(of table: Tensor, ids: [Int32], into out: UnsafeMutablePointer<Float>, width: Int) throws {
        precondition(table.rank == 2 && table.shape[1] == width, "token table \(table.shape) is not [vocabulary, \(width)]")
        let source = table.isContiguous ? table : table.contiguous()
        withExtendedLifetime(source) {
            for (i, id) in ids.enumerated() {
                let dst = out + i * width
                let offset = Int(id) * width
                switch source.dtype {
                case .f32:
                    dst.update(from: source.baseAddress.assumingMemoryBound(to: Float.self) + offset, count: width)
                case .f16:
                    ah_f16_to_f32(source.baseAddress.assumingMemoryBound(to: UInt16.self) + offset, dst, width)
                case .bf16:
                    ah_bf16_to_f32(source.baseAddress.assumingMemoryBound(to: UInt16.self) + offset, dst, width)
                default:
                    let row = source.sliced(axis: 0, Int(id)..<Int(id) + 1).to(.f32)
                    row.withFloats { dst.update(from: $0.baseAddress!, count: width) }
                }
            }
        }
    }

    /// Rows `positions[b]` of each sequence b of `x` [B, T, W] → [B, W].
    static func gatherRows(_ x: Tensor, positions: [Int]) -> Tensor {
        let (length, width) = (x.shape[1], x.shape[2])
        let src = x.contiguousF32
        let out = Tensor(uninitialized: [positions.count, width])
        src.withFloats { s in
            for (b, p) in positions.enumerated() {
                (out.f32Pointer + b * width).update(from: s.baseAddress! + (b * length + p) * width, count: width)
            }
        }
        return out
    }

    /// Where each sequence pools: its first `endOfText` token, else its largest id (what
    /// transformers does for CLIP configs with `eos_token_id` 2, and open_clip always:
    /// `argmax` — the end-of-text id 49407 is the largest, so both agree on real tokens).
    public static func pooledPositions(_ tokens: [[Int32]], endOfText: Int32 = CLIPTokenizer.endOfTextID) -> [Int] {
        tokens.map { row in
            if let first = row.firstIndex(of: endOfText) { return first }
            var best = 0
            for (i, id) in row.enumerated() where id > row[best] { best = i }
            return best
        }
    }
}
