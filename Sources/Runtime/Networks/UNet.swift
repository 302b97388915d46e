import Host
import Tensor

/// SDXL's extra conditioning (`addition_embed_type = "text_time"`).
public struct SDXLConditioning {
    /// Pooled text embeddings [B, P] (OpenCLIP-bigG's projected pooled output).
    public var textEmbeds: Tensor
    /// [B, 6]: original height, width, crop top, crop left, target height, target width.
    public var timeIDs: Tensor

    public init(textEmbeds: Tensor, timeIDs: Tensor) {
        self.textEmbeds = textEmbeds
        self.timeIDs = timeIDs
    }
}

/// Errors of a UNet call (inputs that do not fit the model).
public enum UNetError: Error, CustomStringConvertible, Equatable {
    case badInput(String)

    public var description: String {
        switch self {
        case .badInput(let reason): return "UNet: \(reason)"
        }
    }
}

/// diffusers' `UNet2DConditionModel` for SD1.x, SD2.x and SDXL, on the CPU, reading its weights
/// from a `ModelWeights` at every call (single-file ldm/sgm or diffusers naming).
///
/// The structure comes from the tensors present: levels, resnets per level, which levels have
/// transformers and how deep, channel widths, conv (SD1) or linear (SD2/SDXL) projections,
/// SDXL's `add_embedding`, inpainting's 9 input channels; `UNetConfig` adds what weights do
/// not say (head counts, norm groups, prediction type). Nothing of the model is copied: F32
/// weights are used in place, F16/BF16 ones widened per layer into one reused buffer, so
/// merged-mode patches are seen by the next call and memory stays at the weights plus
/// activations. Calls from several threads are serialised (the workspace is shared).
public final class UNet {
    public let weights: ModelWeights
    public let config: UNetConfig
    /// Latent channels in and out (in: 9 for inpainting UNets).
    public let inChannels: Int
    public let outChannels: Int
    /// Width of the text context the cross-attentions read (0 when there is none).
    public let contextWidth: Int
    /// Pooled-text width SDXL's add embedding expects (nil for SD1/SD2).
    public let pooledWidth: Int?
    /// Number of resolution levels.
    public var levels: Int { downBlocks.count }
    /// Scratch reused across calls.
    public let workspace = Workspace()

    let convIn: Conv2d
    let timeEmbedding: TimestepEmbeddingMLP
    let timeProjectionWidth: Int
    let addEmbedding: TimestepEmbeddingMLP?
    let downBlocks: [UNetDownBlock]
    let midBlock: UNetMidBlock
    let upBlocks: [UNetUpBlock]
    let normOut: GroupNorm
    let convOut: Conv2d

    /// Builds the UNet of `weights` (`config`: the family's standard settings when nil).
    public init(weights: ModelWeights, config: UNetConfig? = nil, resolver: WeightKeyResolver? = nil) throws {
        try BLAS.ensureLoaded()
        let config = config ?? .standard(for: weights.family)
        self.weights = weights
        self.config = config
        let root = WeightLoader(resolver: resolver ?? WeightKeyResolver(model: weights), component: .unet)
        guard root.contains("conv_in.weight") else {
            throw WeightLoaderError.missingComponent(model: weights.path, component: "UNet")
        }
        convIn = try Conv2d(root.child("conv_in"))
        convOut = try Conv2d(root.child("conv_out"))
        inChannels = convIn.inChannels
        outChannels = convOut.outChannels
        timeEmbedding = try TimestepEmbeddingMLP(root.child("time_embedding"))
        timeProjectionWidth = timeEmbedding.linear1.inFeatures
        if root.contains("add_embedding.linear_1.weight") {
            let add = try TimestepEmbeddingMLP(root.child("add_embedding"))
            let pooled = add.linear1.inFeatures - 6 * config.additionTimeEmbedDimension
            try add.linear1.weight.require(pooled > 0, "add_embedding input \(add.linear1.inFeatures) leaves no room for pooled text next to 6 × \(config.additionTimeEmbedDimension) time ids")
            addEmbedding = add
            pooledWidth = pooled
        } else {
            addEmbedding = nil
            pooledWidth = nil
        }
        let levelCount = root.count("down_blocks", probe: "resnets.0.conv1.weight")
        var down: [UNetDownBlock] = []
        for level in 0..<levelCount {
            let loader = root.child("down_blocks", level)
            let channels = try loader.parameter("resnets.0.conv1.weight").shape[0]
            down.append(try UNetDownBlock(loader, heads: config.heads(level: level, channels: channels), config: config))
        }
        downBlocks = down
        let midLoader = root.child("mid_block")
        let midChannels = try midLoader.parameter("resnets.0.conv1.weight").shape[0]
        midBlock = try UNetMidBlock(midLoader, heads: config.heads(level: levelCount - 1, channels: midChannels), config: config)
        var up: [UNetUpBlock] = []
        let upCount = root.count("up_blocks", probe: "resnets.0.conv1.weight")
        for i in 0..<upCount {
            let loader = root.child("up_blocks", i)
            let channels = try loader.parameter("resnets.0.conv1.weight").shape[0]
            up.append(try UNetUpBlock(loader, heads: config.heads(level: max(0, upCount - 1 - i), channels: channels), config: config))
        }
        upBlocks = up
        normOut = try GroupNorm(root.child("conv_norm_out"), groups: config.normGroups, eps: config.resnetEps)
        let firstAttention = (downBlocks.flatMap(\.attentions) + midBlock.attentions).first?.blocks.first
        contextWidth = firstAttention?.crossAttention?.key.inFeatures ?? 0
    }

    /// One evaluation: the model's prediction (ε or v, per `config.prediction`) for `sample`
    /// [B, C_in, H, W] at `timesteps` (one per image, or one for all; continuous values are
    /// fine), conditioned on `context` [B, M, contextWidth]; SDXL models also need `added`.
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], context: Tensor,
                               added: SDXLConditioning? = nil, hooks: GenerationHooks = .none) throws -> Tensor {
        try workspace.exclusive { try evaluate(sample, timesteps: timesteps, context: context, added: added, hooks: hooks) }
    }

    /// `callAsFunction`'s body, run with the workspace held.
    private func evaluate(_ sample: Tensor, timesteps: [Float], context: Tensor,
                          added: SDXLConditioning?, hooks: GenerationHooks) throws -> Tensor {
        guard sample.rank == 4, sample.shape[1] == inChannels else {
            throw UNetError.badInput("sample \(sample.shape) is not [B, \(inChannels), H, W]")
        }
        let batch = sample.shape[0]
        guard timesteps.count == batch || timesteps.count == 1 else {
            throw UNetError.badInput("\(timesteps.count) timesteps for a batch of \(batch)")
        }
        guard context.rank == 3, context.shape[0] == batch, contextWidth == 0 || context.shape[2] == contextWidth else {
            throw UNetError.badInput("context \(context.shape) is not [\(batch), tokens, \(contextWidth)]")
        }
        let x = sample.contiguousF32, text = context.contiguousF32
        let steps = timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch)

        // Time (and SDXL size/crop) embedding, SiLU'd once for every resnet.
        var embedding = try timeEmbedding(timestepEmbedding(steps, dimension: timeProjectionWidth),
                                          hooks: hooks, workspace: workspace)
        if let addEmbedding, let pooledWidth {
            guard let added else { throw UNetError.badInput("an SDXL UNet needs pooled text embeddings and time ids") }
            guard added.textEmbeds.shape == [batch, pooledWidth], added.timeIDs.count == batch * 6 else {
                throw UNetError.badInput("SDXL conditioning text_embeds \(added.textEmbeds.shape) / time_ids \(added.timeIDs.shape) is not [\(batch), \(pooledWidth)] / [\(batch), 6]")
            }
            let timeEmbeds = timestepEmbedding(added.timeIDs.floats, dimension: config.additionTimeEmbedDimension)
                .reshaped([batch, 6 * config.additionTimeEmbedDimension])
            let conditioning = Tensor.concat([added.textEmbeds.contiguousF32, timeEmbeds], axis: 1)
            embedding = try addEmbedding(conditioning, hooks: hooks, workspace: workspace, adding: embedding)
        }
        let activated = Activation.silu(embedding, workspace: workspace)

        var h = try convIn(x, hooks: hooks, workspace: workspace)
        var skips = [h]
        for block in downBlocks {
            h = try block(h, embedding: activated, context: text, skips: &skips, hooks: hooks, workspace: workspace)
        }
        h = try midBlock(h, embedding: activated, context: text, hooks: hooks, workspace: workspace)
        for block in upBlocks {
            h = try block(h, embedding: activated, context: text, skips: &skips, hooks: hooks, workspace: workspace)
        }
        return try convOut(normOut(h, silu: true, workspace: workspace), hooks: hooks, workspace: workspace)
    }

    /// `callAsFunction` with one timestep for the whole batch.
    public func callAsFunction(_ sample: Tensor, timestep: Float, context: Tensor, added: SDXLConditioning? = nil,
                               hooks: GenerationHooks = .none) throws -> Tensor {
        try self(sample, timesteps: [timestep], context: context, added: added, hooks: hooks)
    }
}

extension TimestepEmbeddingMLP {
    /// linear_2(silu(linear_1(x))) + `residual`.
    func callAsFunction(_ x: Tensor, hooks: GenerationHooks, workspace: Workspace, adding residual: Tensor) throws -> Tensor {
        try linear2(Activation.silu(linear1(x, hooks: hooks, workspace: workspace)), hooks: hooks, workspace: workspace,
                    adding: residual)
    }
}
