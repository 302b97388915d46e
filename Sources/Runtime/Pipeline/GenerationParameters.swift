import Host
import Tensor

/// The settings of one txt2img generation (one image), with A1111's defaults.
public struct GenerationParameters: Sendable {
    /// The prompt as the user wrote it; extra-network tags (`<lora:…>`, `<hypernet:…>`) are
    /// taken out before encoding (and kept in the infotext, as A1111 does).
    public var prompt: String
    /// The negative prompt. A1111 activates extra networks from the prompt only; tags in the
    /// negative prompt activate nothing but are removed from its text all the same.
    public var negativePrompt: String
    /// The image's seed (A1111 CPU RNG: `torch.Generator("cpu").manual_seed(seed)`).
    public var seed: UInt64
    public var steps: Int
    public var cfgScale: Double
    public var sampler: A1111Sampler
    /// Image size in pixels (multiples of the UNet's downsampling factor × 8).
    public var width: Int
    public var height: Int
    /// A1111's "Clip skip" (SD1 only).
    public var clipSkip: Int
    /// A1111's "Eta noise seed delta" (0: off).
    public var etaNoiseSeedDelta: UInt64
    /// A1111's "Eta for ancestral samplers" (1).
    public var ancestralEta: Float

    public init(prompt: String, negativePrompt: String = "", seed: UInt64, steps: Int = 20, cfgScale: Double = 7,
                sampler: A1111Sampler = .eulerAncestral, width: Int = 512, height: Int = 512, clipSkip: Int = 1,
                etaNoiseSeedDelta: UInt64 = 0, ancestralEta: Float = 1) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.seed = seed
        self.steps = steps
        self.cfgScale = cfgScale
        self.sampler = sampler
        self.width = width
        self.height = height
        self.clipSkip = clipSkip
        self.etaNoiseSeedDelta = etaNoiseSeedDelta
        self.ancestralEta = ancestralEta
    }
}

/// How adapters change the model during a generation.
public enum AdapterMode: String, Sendable, CaseIterable {
    /// Deltas are merged into the weights before sampling and the originals restored after.
    case merged
    /// Weights stay untouched; every adapted layer adds the adapters' term at run time.
    case bypass
}

/// Wall-clock seconds of a generation's stages.
public struct GenerationTimings: Sendable {
    public var adapters: Double = 0
    public var conditioning: Double = 0
    public var sampling: Double = 0
    public var decoding: Double = 0
    public var total: Double { adapters + conditioning + sampling + decoding }
}

/// What a generation produced.
public struct GenerationResult {
    /// The sampler's final latents [1, C, h, w] (diffusion space, before the VAE).
    public var latents: Tensor
    /// The VAE's output [1, 3, H, W] (about [−1, 1]), nil when the model has no VAE.
    public var decoded: Tensor?
    /// The 8-bit image (A1111's conversion of `decoded`).
    public var image: RGBImage?
    /// A1111's generation parameters text.
    public var infotext: Infotext
    /// The LoRAs used, in the order applied (A1111's).
    public var loras: [LoadedLora]
    /// The hypernetworks used, in prompt order.
    public var hypernetworks: [LoadedHypernetwork]
    /// Names of the embeddings the prompt used, then those the negative prompt used (each in
    /// order of first use): what "TI hashes" lists.
    public var embeddingsUsed: [String]
    /// Which adapter modules were applied or skipped (nil without adapters).
    public var patchReport: PatchReport?
    /// Things worth telling the user (unknown tag kinds, ignored settings, toy vocabularies…).
    public var warnings: [String]
    public var timings: GenerationTimings
}
