import Host
import Tensor

/// A two-layer MLP: diffusers' `FeedForward` (GEGLU: `net.0.proj` projects to twice the inner
/// width, hidden · gelu(gate), then `net.2`) or CLIP's MLP (`fc1`, activation, `fc2`).
public struct FeedForward {
    /// How the first projection's output is activated.
    public enum Kind: Sendable, Equatable {
        /// Split in halves, hidden · gelu(gate) (diffusers `GEGLU`).
        case geglu
        /// An elementwise activation.
        case activation(Activation)
    }

    public let first: Linear
    public let second: Linear
    public let kind: Kind

    public init(first: Linear, second: Linear, kind: Kind) {
        self.first = first
        self.second = second
        self.kind = kind
    }

    /// diffusers naming: `net.0.proj` (GEGLU when it is twice as wide as `net.2`'s input, else
    /// GELU), `net.2`.
    public init(diffusers loader: WeightLoader) throws {
        let first = try Linear(loader.child("net.0.proj"))
        let second = try Linear(loader.child("net.2"))
        self.init(first: first, second: second,
                  kind: first.outFeatures == 2 * second.inFeatures ? .geglu : .activation(.gelu))
    }

    /// Rows per block: the projected block stays near 8 MiB (SD1's 64×64 level would otherwise
    /// hold an 84 MB projection and a 42 MB activation at once), GEMMs stay large.
    static let blockFloats = 1 << 21

    /// second(act(first(x))) (+ `residual`), in blocks of rows (every step is row-wise, bypass
    /// terms included).
    public func callAsFunction(_ x: Tensor, hooks: GenerationHooks = .none, workspace: Workspace,
                               adding residual: Tensor? = nil) throws -> Tensor {
        let input = x.contiguousF32
        let rows = input.count / max(first.inFeatures, 1)
        let out = workspace.tensor(Array(x.shape.dropLast()) + [second.outFeatures])
        let flatInput = input.reshaped([rows, first.inFeatures]), flatOut = out.reshaped([rows, second.outFeatures])
        let flatResidual = residual.map { $0.contiguousF32.reshaped([rows, second.outFeatures]) }
        let block = max(64, FeedForward.blockFloats / max(first.outFeatures, 1) / 64 * 64)
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + block)
            let projected = try first(flatInput.sliced(axis: 0, r0..<r1), hooks: hooks, workspace: workspace)
            let hidden: Tensor
            switch kind {
            case .geglu: hidden = geglu(projected, workspace: workspace)
            case .activation(let f): hidden = f(projected, workspace: workspace)
            }
            try second.forward(hidden, into: flatOut.sliced(axis: 0, r0..<r1), hooks: hooks, workspace: workspace,
                               adding: flatResidual?.sliced(axis: 0, r0..<r1))
            r0 = r1
        }
        return out
    }
}

/// diffusers' `BasicTransformerBlock` as SD uses it: pre-LayerNorm self-attention,
/// cross-attention and GEGLU feed-forward, each with a residual.
public struct BasicTransformerBlock {
    public let norm1: LayerNorm
    public let selfAttention: Attention
    public let norm2: LayerNorm?
    public let crossAttention: Attention?
    public let norm3: LayerNorm
    public let feedForward: FeedForward

    /// The block at `loader` (`transformer_blocks.N`), `heads` per attention.
    public init(_ loader: WeightLoader, heads: Int, layerNormEps: Float = 1e-5) throws {
        norm1 = try LayerNorm(loader.child("norm1"), eps: layerNormEps)
        selfAttention = try Attention(diffusers: loader.child("attn1"), heads: heads)
        if loader.contains("attn2.to_q.weight") {
            norm2 = try LayerNorm(loader.child("norm2"), eps: layerNormEps)
            crossAttention = try Attention(diffusers: loader.child("attn2"), heads: heads)
        } else {
            norm2 = nil
            crossAttention = nil
        }
        norm3 = try LayerNorm(loader.child("norm3"), eps: layerNormEps)
        feedForward = try FeedForward(diffusers: loader.child("ff"))
    }

    /// Tokens [B, N, C] over `context` [B, M, C_ctx].
    public func callAsFunction(_ x: Tensor, context: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = try selfAttention(norm1(x, workspace: workspace), hooks: hooks, workspace: workspace, adding: x)
        if let norm2, let crossAttention {
            h = try crossAttention(norm2(h, workspace: workspace), context: context, hooks: hooks, workspace: workspace, adding: h)
        }
        return try feedForward(norm3(h, workspace: workspace), hooks: hooks, workspace: workspace, adding: h)
    }
}

/// diffusers' `Transformer2DModel` (continuous input): GroupNorm, `proj_in` (1×1 conv in SD1,
/// linear in SD2/SDXL: the same matrix), transformer blocks on the H·W tokens, `proj_out`,
/// plus the input. The image ↔ tokens transpositions are folded into proj_in/proj_out's GEMMs.
public struct Transformer2D {
    public let norm: GroupNorm
    public let projectIn: Linear
    public let blocks: [BasicTransformerBlock]
    public let projectOut: Linear

    /// The model at `loader` (`…attentions.N`); depth = the `transformer_blocks` present.
    public init(_ loader: WeightLoader, heads: Int, groups: Int, eps: Float = 1e-6, layerNormEps: Float = 1e-5) throws {
        norm = try GroupNorm(loader.child("norm"), groups: groups, eps: eps)
        projectIn = try Linear(loader.child("proj_in"))
        let depth = loader.count("transformer_blocks", probe: "attn1.to_q.weight")
        blocks = try (0..<depth).map {
            try BasicTransformerBlock(loader.child("transformer_blocks", $0), heads: heads, layerNormEps: layerNormEps)
        }
        projectOut = try Linear(loader.child("proj_out"))
    }

    /// x [B, C, H, W] → x + proj_out(blocks(proj_in(norm(x)))).
    public func callAsFunction(_ x: Tensor, context: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        let (height, width) = (x.shape[2], x.shape[3])
        var tokens = try projectIn.forward(channelsFirst: norm(x, workspace: workspace), hooks: hooks, workspace: workspace)
        for block in blocks {
            tokens = try block(tokens, context: context, hooks: hooks, workspace: workspace)
        }
        return try projectOut.forwardToChannelsFirst(tokens, height: height, width: width, hooks: hooks,
                                                     workspace: workspace, adding: x)
    }
}
