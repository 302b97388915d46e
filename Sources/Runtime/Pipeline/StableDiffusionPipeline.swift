import Foundation
import Host
import Tensor

/// A Stable Diffusion checkpoint ready to generate: its UNet, VAE and text encoders, noise
/// schedule and prediction type, built once over the model's weights (nothing is copied: every
/// network reads `model`'s tensors at each call, so merged-mode adapters patched into `model`
/// are seen by the next generation and undone by restoring it).
///
/// SD1, SD2 (ε and v) and SDXL, single files (A1111/ComfyUI) or diffusers folders.
/// Not thread-safe: one generation at a time.
public final class StableDiffusionPipeline {
    /// The weights the networks read (a toy-vocabulary test model is read through a folded
    /// token table, see `TokenTableFolding`; every other tensor is the loaded one).
    public let model: ModelWeights
    public private(set) var configuration: ModelConfiguration
    public let unet: UNet
    /// Nil when the model has no VAE (then only latents can be produced).
    public let vae: AutoencoderKL?
    /// The family's text encoders, in order (SDXL: CLIP-L, then OpenCLIP-bigG).
    public let textEncoders: [TextEncoder]
    /// The model's DDPM schedule: the checkpoint's own `alphas_cumprod` when it stores one
    /// (ldm single files; A1111 uses it), else the SD schedule computed as LDM does.
    public let schedule: DiscreteSchedule
    public let tokenizer: CLIPTokenizer
    /// Notes from loading (folded toy vocabularies, how the prediction type was decided).
    public private(set) var warnings: [String] = []

    /// ε or v.
    public var prediction: ModelPrediction { configuration.prediction }
    public var family: ModelFamily { model.family }

    /// Loads a single-file checkpoint or a diffusers folder and builds the pipeline.
    public static func load(path: String, configDirectory: String? = nil,
                            prediction: ModelPrediction? = nil) throws -> StableDiffusionPipeline {
        try StableDiffusionPipeline(model: ModelWeights.load(path: path), configDirectory: configDirectory,
                                    prediction: prediction)
    }

    /// The pipeline of `model` (see `ModelConfiguration.resolve` for `configDirectory` and
    /// `prediction`).
    public init(model loaded: ModelWeights, configDirectory: String? = nil, prediction: ModelPrediction? = nil) throws {
        guard !loaded.isInpainting else {
            throw PipelineError.unsupportedModel(model: loaded.path, reason: "an inpainting UNet (9 input channels); txt2img runs 4-channel models")
        }
        var configuration = try ModelConfiguration.resolve(for: loaded, configDirectory: configDirectory,
                                                           prediction: prediction)
        if configuration.predictionSource == nil, loaded.tensor("v_pred") != nil {
            // ComfyUI / reForge mark v-prediction single files with an empty `v_pred` tensor.
            configuration.prediction = .v
            configuration.predictionSource = "the checkpoint's v_pred key"
        }
        let (model, foldWarnings) = try TokenTableFolding.foldedIfNeeded(loaded)
        warnings += foldWarnings
        let resolver = WeightKeyResolver(model: model)
        unet = try UNet(weights: model, config: configuration.unet, resolver: resolver)
        vae = resolver.resolve("vae.decoder.conv_in.weight") != nil
            ? try AutoencoderKL(weights: model, config: configuration.vae, resolver: resolver) : nil
        textEncoders = try (0..<model.family.textEncoderCount).map { index in
            try TextEncoder(weights: model, part: .textEncoder(index), headCount: configuration.textEncoderHeads[index],
                            activation: configuration.textEncoderActivations[index], resolver: resolver)
        }
        if let stored = model.tensor("alphas_cumprod"), stored.count >= 2, stored.dtype.isFloatingPoint {
            schedule = DiscreteSchedule(alphasCumprod: stored.to(.f32).floats)
        } else {
            schedule = .stableDiffusion
        }
        tokenizer = try CLIPTokenizer.bundled()
        self.model = model
        self.configuration = configuration
        if configuration.predictionSource == nil && model.family == .sd2 && model.naming == .singleFile {
            // A1111 (`sd_models_config.is_using_v_parameterization_for_sd2`) tells SD2 768-v
            // single files from 512-base ones by one UNet call; do the same.
            let isV = try probeVPrediction()
            self.configuration.prediction = isV ? .v : .epsilon
            self.configuration.predictionSource = "A1111's SD2 probe (one UNet call)"
            warnings.append("SD2 checkpoint without a config: \(isV ? "v" : "ε")-prediction by A1111's probe; pass --prediction to override")
        }
    }

    /// A1111's SD2 v-parameterization probe: v when `probeMean() < −1`.
    func probeVPrediction() throws -> Bool { try probeMean() < -1 }

    /// mean(UNet(x, t = 999, context) − x) with x and the 2-token context filled with 0.5
    /// (`sd_models_config.is_using_v_parameterization_for_sd2`).
    func probeMean() throws -> Double {
        let x = Tensor(shape: [1, unet.inChannels, 8, 8], values: [Float](repeating: 0.5, count: unet.inChannels * 64))
        let width = max(unet.contextWidth, 1)
        let context = Tensor(shape: [1, 2, width], values: [Float](repeating: 0.5, count: 2 * width))
        let out = try unet(x, timestep: 999, context: context)
        return (out - x).mean()
    }

    /// Images must be a multiple of this many pixels on each side (8 per latent pixel times
    /// the UNet's downsamplings).
    public var sizeMultiple: Int { 8 << max(unet.levels - 1, 0) }

    /// The stem of the checkpoint (A1111's model name): file name without extension, or the
    /// folder's name.
    public var modelName: String {
        let last = (model.path as NSString).lastPathComponent
        return model.path.lowercased().hasSuffix(".safetensors") ? (last as NSString).deletingPathExtension : last
    }

    /// A1111's model hash: the first 10 hex digits of the checkpoint file's SHA-256 (nil for a
    /// folder). Reads the whole file on first use.
    public func modelHash() throws -> String? {
        try model.fileSHA256().map { String($0.prefix(10)) }
    }
}
