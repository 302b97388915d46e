import Host
import Tensor

/// diffusers' `ResnetBlock2D` (also the VAE's, without the time embedding):
/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(emb)); out = conv2(silu(norm2(h))) + shortcut(x).
/// The conv biases, the time term and the residual are written into the conv outputs before
/// their GEMMs accumulate (no extra passes).
public struct ResnetBlock2D {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    public let timeProjection: Linear?
    public let norm2: GroupNorm
    public let conv2: Conv2d
    /// 1×1 convolution when the channel count changes.
    public let shortcut: Conv2d?

    public init(_ loader: WeightLoader, groups: Int, eps: Float) throws {
        norm1 = try GroupNorm(loader.child("norm1"), groups: groups, eps: eps)
        conv1 = try Conv2d(loader.child("conv1"))
        timeProjection = loader.contains("time_emb_proj.weight") ? try Linear(loader.child("time_emb_proj")) : nil
        norm2 = try GroupNorm(loader.child("norm2"), groups: groups, eps: eps)
        conv2 = try Conv2d(loader.child("conv2"))
        shortcut = loader.contains("conv_shortcut.weight") ? try Conv2d(loader.child("conv_shortcut"), padding: .symmetric(0)) : nil
    }

    /// `x` [B, C_in, H, W]; `activatedEmbedding` is silu(emb) [B, T] (nil for the VAE).
    public func callAsFunction(_ x: Tensor, activatedEmbedding: Tensor?, hooks: GenerationHooks,
                               workspace: Workspace) throws -> Tensor {
        var timeTerm: [Float]? = nil
        if let timeProjection, let activatedEmbedding {
            timeTerm = try timeProjection(activatedEmbedding, hooks: hooks, workspace: workspace).floats
        }
        var h = try conv1(norm1(x, silu: true, workspace: workspace), hooks: hooks, workspace: workspace, perImageChannel: timeTerm)
        h = try norm2(h, silu: true, workspace: workspace)
        let residual = try shortcut.map { try $0(x, hooks: hooks, workspace: workspace) } ?? x
        return try conv2(h, hooks: hooks, workspace: workspace, adding: residual)
    }
}

/// [a, b] concatenated along channels (NCHW F32, same batch and size).
func concatChannels(_ a: Tensor, _ b: Tensor, workspace: Workspace) -> Tensor {
    precondition(a.rank == 4 && b.rank == 4 && a.shape[0] == b.shape[0] && a.shape[2...] == b.shape[2...],
                 "cannot concatenate \(a.shape) and \(b.shape) by channel")
    let (x, y) = (a.contiguousF32, b.contiguousF32)
    let batch = a.shape[0], blockA = x.count / batch, blockB = y.count / batch
    let out = workspace.tensor([batch, a.shape[1] + b.shape[1], a.shape[2], a.shape[3]])
    let (pa, pb, po) = (UnsafePointer(x.f32Pointer), UnsafePointer(y.f32Pointer), out.f32Pointer)
    withExtendedLifetime((x, y)) {
        Work.parallel(2 * batch, costPerItem: max(blockA, blockB)) { item in
            let image = item / 2, dst = po + image * (blockA + blockB)
            if item % 2 == 0 { dst.update(from: pa + image * blockA, count: blockA) }
            else { (dst + blockA).update(from: pb + image * blockB, count: blockB) }
        }
    }
    return out
}

/// A level of the UNet's encoder: resnets, each followed by a transformer when the level has
/// them, then an optional stride-2 downsampling convolution. Every output is kept for the
/// decoder's skip connections.
struct UNetDownBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2D]
    let downsampler: Conv2d?

    init(_ loader: WeightLoader, heads: Int, config: UNetConfig) throws {
        let count = loader.count("resnets", probe: "conv1.weight")
        resnets = try (0..<count).map { try ResnetBlock2D(loader.child("resnets", $0), groups: config.normGroups, eps: config.resnetEps) }
        let attentionCount = loader.count("attentions", probe: "proj_in.weight")
        attentions = try (0..<attentionCount).map {
            try Transformer2D(loader.child("attentions", $0), heads: heads, groups: config.normGroups, eps: config.transformerNormEps)
        }
        downsampler = loader.contains("downsamplers.0.conv.weight")
            ? try Conv2d(loader.child("downsamplers.0.conv"), stride: 2, padding: .symmetric(1)) : nil
    }

    func callAsFunction(_ x: Tensor, embedding: Tensor, context: Tensor, skips: inout [Tensor],
                        hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            h = try resnet(h, activatedEmbedding: embedding, hooks: hooks, workspace: workspace)
            if i < attentions.count { h = try attentions[i](h, context: context, hooks: hooks, workspace: workspace) }
            skips.append(h)
        }
        if let downsampler {
            h = try downsampler(h, hooks: hooks, workspace: workspace)
            skips.append(h)
        }
        return h
    }
}

/// The bottleneck: resnet, then (transformer, resnet) pairs.
struct UNetMidBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2D]

    init(_ loader: WeightLoader, heads: Int, config: UNetConfig) throws {
        let count = loader.count("resnets", probe: "conv1.weight")
        resnets = try (0..<count).map { try ResnetBlock2D(loader.child("resnets", $0), groups: config.normGroups, eps: config.resnetEps) }
        let attentionCount = loader.count("attentions", probe: "proj_in.weight")
        attentions = try (0..<attentionCount).map {
            try Transformer2D(loader.child("attentions", $0), heads: heads, groups: config.normGroups, eps: config.transformerNormEps)
        }
        try loader.parameter("resnets.0.conv1.weight").require(resnets.count == attentions.count + 1,
                                                              "a mid block needs one resnet more than transformers")
    }

    func callAsFunction(_ x: Tensor, embedding: Tensor, context: Tensor, hooks: GenerationHooks,
                        workspace: Workspace) throws -> Tensor {
        var h = try resnets[0](x, activatedEmbedding: embedding, hooks: hooks, workspace: workspace)
        for (i, attention) in attentions.enumerated() {
            h = try attention(h, context: context, hooks: hooks, workspace: workspace)
            h = try resnets[i + 1](h, activatedEmbedding: embedding, hooks: hooks, workspace: workspace)
        }
        return h
    }
}

/// A level of the UNet's decoder: resnets on [h, skip] concatenated by channel, each followed
/// by a transformer when the level has them, then an optional nearest-2× upsampling + conv.
struct UNetUpBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2D]
    let upsampler: Conv2d?

    init(_ loader: WeightLoader, heads: Int, config: UNetConfig) throws {
        let count = loader.count("resnets", probe: "conv1.weight")
        resnets = try (0..<count).map { try ResnetBlock2D(loader.child("resnets", $0), groups: config.normGroups, eps: config.resnetEps) }
        let attentionCount = loader.count("attentions", probe: "proj_in.weight")
        attentions = try (0..<attentionCount).map {
            try Transformer2D(loader.child("attentions", $0), heads: heads, groups: config.normGroups, eps: config.transformerNormEps)
        }
        upsampler = loader.contains("upsamplers.0.conv.weight") ? try Conv2d(loader.child("upsamplers.0.conv")) : nil
    }

    func callAsFunction(_ x: Tensor, embedding: Tensor, context: Tensor, skips: inout [Tensor],
                        hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            let skip = skips.removeLast()
            let joined = NetworkProfiler.measure("concat") { concatChannels(h, skip, workspace: workspace) }
            h = try resnet(joined, activatedEmbedding: embedding, hooks: hooks, workspace: workspace)
            if i < attentions.count { h = try attentions[i](h, context: context, hooks: hooks, workspace: workspace) }
        }
        if let upsampler {
            // Upsample to the next skip's size (diffusers' `upsample_size` when the latent is not
            // a multiple of the total downsampling); exactly 2× reads the small image directly.
            let target = skips.last.map { ($0.shape[2], $0.shape[3]) } ?? (h.shape[2] * 2, h.shape[3] * 2)
            if target == (h.shape[2] * 2, h.shape[3] * 2) {
                h = try upsampler(h, hooks: hooks, workspace: workspace, upsample2x: true)
            } else {
                h = try upsampler(upsampleNearest(h, height: target.0, width: target.1, workspace: workspace), hooks: hooks,
                                  workspace: workspace)
            }
        }
        return h
    }
}
