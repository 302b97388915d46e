import Host
import Tensor

/// What the VAE's weights do not say.
public struct VAEConfig: Sendable, Equatable {
    /// Latents in the diffusion space are the VAE's latents times this (SD1/SD2 0.18215, SDXL 0.13025).
    public var scalingFactor: Float
    /// GroupNorm groups (32 in every released SD VAE).
    public var normGroups: Int
    /// GroupNorm ε (diffusers' Encoder/Decoder use 1e-6).
    public var eps: Float

    public init(scalingFactor: Float, normGroups: Int = 32, eps: Float = 1e-6) {
        self.scalingFactor = scalingFactor
        self.normGroups = normGroups
        self.eps = eps
    }

    /// The released VAEs' settings for `family`.
    public static func standard(for family: ModelFamily) -> VAEConfig {
        VAEConfig(scalingFactor: family == .sdxl ? 0.13025 : 0.18215)
    }
}

/// The encoder's output: a diagonal Gaussian over the VAE's (unscaled) latents.
public struct LatentDistribution {
    /// [B, C, h, w].
    public let mean: Tensor
    /// log σ² (clamped to [−30, 20], as diffusers does).
    public let logVariance: Tensor

    /// Diffusion-space latents: (mean + σ·noise)·scalingFactor (noise nil: the mean).
    public func latents(scalingFactor: Float, noise: Tensor? = nil) -> Tensor {
        var z = mean
        if let noise { z = mean + (logVariance.scaled(by: 0.5).exponential() * noise) }
        return z.scaled(by: Double(scalingFactor))
    }
}

/// diffusers' `AutoencoderKL` (the SD VAE) decoder and encoder, on the CPU, weights read from a
/// `ModelWeights` at every call (single-file `first_stage_model.` or diffusers `vae.` keys).
/// Structure (levels, resnets per level, widths) comes from the tensors; the mid-block
/// attention is one head over all channels. Not thread-safe: one call at a time.
public final class AutoencoderKL {
    public let weights: ModelWeights
    public let config: VAEConfig
    public let latentChannels: Int
    /// Scratch reused across calls.
    public let workspace = Workspace()
    let decoder: VAEDecoder
    let postQuantConv: Conv2d?
    let encoder: VAEEncoder?
    let quantConv: Conv2d?

    public init(weights: ModelWeights, config: VAEConfig? = nil, resolver: WeightKeyResolver? = nil) throws {
        try BLAS.ensureLoaded()
        let config = config ?? .standard(for: weights.family)
        self.weights = weights
        self.config = config
        let root = WeightLoader(resolver: resolver ?? WeightKeyResolver(model: weights), component: .vae)
        guard root.contains("decoder.conv_in.weight") else {
            throw WeightLoaderError.missingComponent(model: weights.path, component: "VAE decoder")
        }
        decoder = try VAEDecoder(root.child("decoder"), config: config)
        postQuantConv = root.contains("post_quant_conv.weight") ? try Conv2d(root.child("post_quant_conv"), padding: .symmetric(0)) : nil
        latentChannels = postQuantConv?.inChannels ?? decoder.convIn.inChannels
        encoder = root.contains("encoder.conv_in.weight") ? try VAEEncoder(root.child("encoder"), config: config) : nil
        quantConv = root.contains("quant_conv.weight") ? try Conv2d(root.child("quant_conv"), padding: .symmetric(0)) : nil
    }

    /// Images [B, 3, 8h, 8w] (about [−1, 1], not clamped) from diffusion-space latents
    /// [B, C, h, w] (divided by the scaling factor first, as pipelines do).
    public func decode(_ latents: Tensor, hooks: GenerationHooks = .none) throws -> Tensor {
        guard latents.rank == 4, latents.shape[1] == latentChannels else {
            throw UNetError.badInput("VAE latents \(latents.shape) are not [B, \(latentChannels), h, w]")
        }
        return try decodeUnscaled(latents.scaled(by: 1 / Double(config.scalingFactor)), hooks: hooks)
    }

    /// The decoder on the VAE's own latents (post_quant_conv, then the decoder).
    public func decodeUnscaled(_ z: Tensor, hooks: GenerationHooks = .none) throws -> Tensor {
        try workspace.exclusive {
            var h = z.contiguousF32
            if let postQuantConv { h = try postQuantConv(h, hooks: hooks, workspace: workspace) }
            return try decoder(h, hooks: hooks, workspace: workspace)
        }
    }

    /// The latent distribution of images [B, 3, H, W] in [−1, 1] (H, W multiples of 8).
    public func encode(_ image: Tensor, hooks: GenerationHooks = .none) throws -> LatentDistribution {
        guard let encoder else { throw WeightLoaderError.missingComponent(model: weights.path, component: "VAE encoder") }
        let moments = try workspace.exclusive {
            let m = try encoder(image.contiguousF32, hooks: hooks, workspace: workspace)
            return try quantConv.map { try $0(m, hooks: hooks, workspace: workspace) } ?? m
        }
        let half = moments.shape[1] / 2
        return LatentDistribution(mean: moments.sliced(axis: 1, 0..<half).contiguous(),
                                  logVariance: moments.sliced(axis: 1, half..<2 * half).clamped(min: -30, max: 20))
    }
}

/// The VAE's mid-block attention: GroupNorm, single-head attention over the H·W pixels with
/// biased q/k/v/out projections (1×1 convs in ldm files, linears in diffusers), plus the input.
struct VAEAttention {
    let norm: GroupNorm
    let attention: Attention

    init(_ loader: WeightLoader, config: VAEConfig) throws {
        norm = try GroupNorm(loader.child("group_norm"), groups: config.normGroups, eps: config.eps)
        attention = try Attention(query: Linear(loader.child("to_q")), key: Linear(loader.child("to_k")),
                                  value: Linear(loader.child("to_v")), output: Linear(loader.child("to_out.0")),
                                  heads: 1)
    }

    func callAsFunction(_ x: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        let (height, width) = (x.shape[2], x.shape[3])
        let normed = try norm(x, workspace: workspace)
        let q = try attention.query.forward(channelsFirst: normed, hooks: hooks, workspace: workspace)
        let k = try attention.key.forward(channelsFirst: normed, hooks: hooks, workspace: workspace)
        let v = try attention.value.forward(channelsFirst: normed, hooks: hooks, workspace: workspace)
        let attended = attention.attend(q: q, k: k, v: v, workspace: workspace)
        return try attention.output!.forwardToChannelsFirst(attended, height: height, width: width, hooks: hooks,
                                                             workspace: workspace, adding: x)
    }
}

/// resnet, attention, resnet (`mid_block`).
struct VAEMidBlock {
    let resnets: [ResnetBlock2D]
    let attention: VAEAttention?

    init(_ loader: WeightLoader, config: VAEConfig) throws {
        resnets = try (0..<2).map { try ResnetBlock2D(loader.child("resnets", $0), groups: config.normGroups, eps: config.eps) }
        attention = loader.contains("attentions.0.to_q.weight") ? try VAEAttention(loader.child("attentions.0"), config: config) : nil
    }

    func callAsFunction(_ x: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = try resnets[0](x, activatedEmbedding: nil, hooks: hooks, workspace: workspace)
        if let attention { h = try attention(h, hooks: hooks, workspace: workspace) }
        return try resnets[1](h, activatedEmbedding: nil, hooks: hooks, workspace: workspace)
    }
}

/// diffusers' VAE `Decoder`: conv_in, mid block, up blocks (resnets, nearest-2× upsampling
/// conv), GroupNorm + SiLU, conv_out.
struct VAEDecoder {
    let convIn: Conv2d
    let mid: VAEMidBlock
    let up: [(resnets: [ResnetBlock2D], upsampler: Conv2d?)]
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ loader: WeightLoader, config: VAEConfig) throws {
        convIn = try Conv2d(loader.child("conv_in"))
        mid = try VAEMidBlock(loader.child("mid_block"), config: config)
        let levels = loader.count("up_blocks", probe: "resnets.0.conv1.weight")
        up = try (0..<levels).map { i in
            let block = loader.child("up_blocks", i)
            let count = block.count("resnets", probe: "conv1.weight")
            let resnets = try (0..<count).map { try ResnetBlock2D(block.child("resnets", $0), groups: config.normGroups, eps: config.eps) }
            let upsampler = block.contains("upsamplers.0.conv.weight") ? try Conv2d(block.child("upsamplers.0.conv")) : nil
            return (resnets, upsampler)
        }
        normOut = try GroupNorm(loader.child("conv_norm_out"), groups: config.normGroups, eps: config.eps)
        convOut = try Conv2d(loader.child("conv_out"))
    }

    func callAsFunction(_ z: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = try convIn(z, hooks: hooks, workspace: workspace)
        h = try mid(h, hooks: hooks, workspace: workspace)
        for level in up {
            for resnet in level.resnets { h = try resnet(h, activatedEmbedding: nil, hooks: hooks, workspace: workspace) }
            if let upsampler = level.upsampler { h = try upsampler(h, hooks: hooks, workspace: workspace, upsample2x: true) }
        }
        return try convOut(normOut(h, silu: true, workspace: workspace), hooks: hooks, workspace: workspace)
    }
}

/// diffusers' VAE `Encoder`: conv_in, down blocks (resnets, then a stride-2 conv after
/// zero-padding one pixel right and bottom), mid block, GroupNorm + SiLU, conv_out (2·C moments).
struct VAEEncoder {
    let convIn: Conv2d
    let down: [(resnets: [ResnetBlock2D], downsampler: Conv2d?)]
    let mid: VAEMidBlock
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ loader: WeightLoader, config: VAEConfig) throws {
        convIn = try Conv2d(loader.child("conv_in"))
        let levels = loader.count("down_blocks", probe: "resnets.0.conv1.weight")
        down = try (0..<levels).map { i in
            let block = loader.child("down_blocks", i)
            let count = block.count("resnets", probe: "conv1.weight")
            let resnets = try (0..<count).map { try ResnetBlock2D(block.child("resnets", $0), groups: config.normGroups, eps: config.eps) }
            let downsampler = block.contains("downsamplers.0.conv.weight")
                ? try Conv2d(block.child("downsamplers.0.conv"), stride: 2, padding: ConvPadding(top: 0, bottom: 1, left: 0, right: 1))
                : nil
            return (resnets, downsampler)
        }
        mid = try VAEMidBlock(loader.child("mid_block"), config: config)
        normOut = try GroupNorm(loader.child("conv_norm_out"), groups: config.normGroups, eps: config.eps)
        convOut = try Conv2d(loader.child("conv_out"))
    }

    func callAsFunction(_ image: Tensor, hooks: GenerationHooks, workspace: Workspace) throws -> Tensor {
        var h = try convIn(image, hooks: hooks, workspace: workspace)
        for level in down {
            for resnet in level.resnets { h = try resnet(h, activatedEmbedding: nil, hooks: hooks, workspace: workspace) }
            if let downsampler = level.downsampler { h = try downsampler(h, hooks: hooks, workspace: workspace) }
        }
        h = try mid(h, hooks: hooks, workspace: workspace)
        return try convOut(normOut(h, silu: true, workspace: workspace), hooks: hooks, workspace: workspace)
    }
}
