import Host
import Tensor

/// A projection of a CLIP block that may be one row block of a fused weight.
///
/// Single-file OpenCLIP encoders (SD2, SDXL's bigG) store q, k and v stacked in one
/// `attn.in_proj_weight`; the weight loader hands each projection its rows as a zero-copy
/// view. Bypass adapters target such a row block as (fused key, rows), so the contribution is
/// asked per row block (`BypassPatch.contribution(for:rows:input:layer:)`); unfused weights go
/// through `Linear`'s own bypass handling.
struct TextEncoderProjection {
    let linear: Linear
    /// Rows of the fused model tensor this projection reads (nil: a weight of its own).
    let rows: Range<Int>?

    init(_ loader: WeightLoader) throws {
        linear = try Linear(loader)
        rows = try Self.fusedRows(of: loader.diffusersKey("weight"), resolver: loader.resolver)
    }

    /// y = x·Wᵀ + b (+ `residual`) plus the adapters' bypass terms.
    func callAsFunction(_ x: Tensor, hooks: GenerationHooks, workspace: Workspace,
                        adding residual: Tensor? = nil) throws -> Tensor {
        guard let rows else { return try linear(x, hooks: hooks, workspace: workspace, adding: residual) }
        var plain = hooks
        plain.bypass = nil   // the fused key's terms belong to three row blocks: asked below per block
        let y = try linear(x, hooks: plain, workspace: workspace, adding: residual)
        let key = linear.weight.modelKey
        if let bypass = hooks.bypass, bypass.hasTerms(for: key, rows: rows),
           let term = try bypass.contribution(for: key, rows: rows, input: x.contiguousF32, layer: .linear) {
            addInPlace(y, term)
        }
        return y
    }

    /// The row range a fused weight gives the diffusers key, or nil for an unfused weight.
    static func fusedRows(of diffusersKey: String, resolver: WeightKeyResolver) throws -> Range<Int>? {
        guard let conversion = resolver.resolve(diffusersKey),
              case let .fusedRows(index, count) = conversion.transform,
              let stored = resolver.model.tensor(conversion.key) else { return nil }
        let size = stored.shape[0] / count
        return index * size..<(index + 1) * size
    }
}

/// One CLIP encoder layer (transformers' `CLIPEncoderLayer`, open_clip's
/// `ResidualAttentionBlock`): pre-LayerNorm causal self-attention and MLP, each with a
/// residual. The residual adds are folded into the output projections' GEMMs.
struct TextEncoderBlock {
    let norm1: LayerNorm
    let query: TextEncoderProjection
    let key: TextEncoderProjection
    let value: TextEncoderProjection
    /// Holds the head split, causal mask and output projection; q/k/v come from above.
    let attention: Attention
    let norm2: LayerNorm
    let mlp: FeedForward

    /// The layer at `loader` (`text_model.encoder.layers.N`).
    init(_ loader: WeightLoader, configuration c: TextEncoderConfiguration) throws {
        let attn = loader.child("self_attn")
        norm1 = try LayerNorm(loader.child("layer_norm1"), eps: c.layerNormEps)
        query = try TextEncoderProjection(attn.child("q_proj"))
        key = try TextEncoderProjection(attn.child("k_proj"))
        value = try TextEncoderProjection(attn.child("v_proj"))
        attention = try Attention(query: query.linear, key: key.linear, value: value.linear,
                                  output: Linear(attn.child("out_proj")), heads: c.headCount, causal: true)
        norm2 = try LayerNorm(loader.child("layer_norm2"), eps: c.layerNormEps)
        mlp = FeedForward(first: try Linear(loader.child("mlp.fc1")), second: try Linear(loader.child("mlp.fc2")),
                          kind: .activation(c.activation))
    }

    /// Hidden states [B, T, W] → the next ones.
    func callAsFunction(_ h: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        let x = try norm1(h)
        let q = try query(x, hooks: hooks, workspace: workspace)
        let k = try key(x, hooks: hooks, workspace: workspace)
        let v = try value(x, hooks: hooks, workspace: workspace)
        let attended = attention.attend(q: q, k: k, v: v, workspace: workspace)
        let afterAttention = try attention.output!(attended, hooks: hooks, workspace: workspace, adding: h)
        return try mlp(norm2(afterAttention), hooks: hooks, workspace: workspace, adding: afterAttention)
    }
}
