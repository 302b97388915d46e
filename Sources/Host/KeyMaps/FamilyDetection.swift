/// What family detection found, and by which rule (for reports and errors).
public struct FamilyDetection: Sendable, Equatable {
    /// The detected family.
    public let family: ModelFamily
    /// How the keys are named (where the UNet is).
    public let naming: ModelNaming
    /// The rule that decided, in words.
    public let rule: String
}

/// A model file that is not a Stable Diffusion checkpoint this host knows.
public struct ModelDetectionError: Error, CustomStringConvertible, Equatable {
    /// The file or folder.
    public let path: String
    /// The rule that failed, in words.
    public let rule: String
    /// Some of the file's keys, for the message.
    public let sampleKeys: [String]

    public var description: String {
        let sample = sampleKeys.isEmpty ? "no tensors" : "keys: " + sampleKeys.joined(separator: ", ")
        return "\(path): not a Stable Diffusion checkpoint: \(rule) (\(sample))"
    }
}

/// Tells SD1, SD2 and SDXL apart from a checkpoint's key names and shapes — structure only,
/// never channel counts, so tiny test models are detected like released ones.
///
/// What weights cannot tell: whether a model predicts noise (ε) or velocity (v). SD2-768-v and
/// SD2-base have the same tensors; prediction type comes from a config (the diffusers
/// scheduler's `prediction_type`, an A1111 `.yaml` next to the file) or the user.
public enum FamilyDetector {
    /// A test on the checkpoint's keys.
    enum Test {
        /// Some key starts with this.
        case keyPrefix(String)
        /// This exact key is present.
        case key(String)
        /// Some key under `under` ending in `suffix` has this rank.
        case rank(under: String, suffix: String, rank: Int)
    }

    enum Outcome {
        case family(ModelFamily)
        case unsupported(String)
    }

    struct Rule {
        let naming: ModelNaming
        let test: Test
        let outcome: Outcome
        let reason: String
    }

    /// The UNet prefix that makes a key set a model of each naming.
    static let unetPrefix: [(ModelNaming, String)] = [(.singleFile, "model.diffusion_model."), (.diffusers, "unet.")]

    /// Checked in order; the first rule that holds decides.
    static let rules: [Rule] = [
        Rule(naming: .singleFile, test: .keyPrefix("conditioner.embedders.1."), outcome: .family(.sdxl),
             reason: "second text encoder under conditioner.embedders.1 (SDXL)"),
        Rule(naming: .singleFile, test: .keyPrefix("conditioner.embedders.0.model."),
             outcome: .unsupported("OpenCLIP-bigG alone under conditioner.embedders.0 is the SDXL refiner, which is not supported"),
             reason: "SDXL refiner"),
        Rule(naming: .singleFile, test: .key("model.diffusion_model.label_emb.0.0.weight"), outcome: .family(.sdxl),
             reason: "UNet label_emb (SDXL size/crop conditioning)"),
        Rule(naming: .singleFile, test: .keyPrefix("cond_stage_model.model."), outcome: .family(.sd2),
             reason: "OpenCLIP text encoder under cond_stage_model.model (SD2)"),
        Rule(naming: .singleFile, test: .keyPrefix("cond_stage_model.transformer."), outcome: .family(.sd1),
             reason: "Hugging Face CLIP text encoder under cond_stage_model.transformer (SD1)"),
        Rule(naming: .singleFile, test: .rank(under: "model.diffusion_model.", suffix: ".proj_in.weight", rank: 2),
             outcome: .family(.sd2), reason: "UNet only, linear proj_in (use_linear_projection: SD2)"),
        Rule(naming: .singleFile, test: .rank(under: "model.diffusion_model.", suffix: ".proj_in.weight", rank: 4),
             outcome: .family(.sd1), reason: "UNet only, 1×1 convolution proj_in (SD1)"),
        Rule(naming: .diffusers, test: .keyPrefix("text_encoder_2."), outcome: .family(.sdxl),
             reason: "text_encoder_2 (SDXL)"),
        Rule(naming: .diffusers, test: .key("unet.add_embedding.linear_1.weight"), outcome: .family(.sdxl),
             reason: "UNet add_embedding (SDXL text_time conditioning)"),
        Rule(naming: .diffusers, test: .rank(under: "unet.", suffix: ".proj_in.weight", rank: 2), outcome: .family(.sd2),
             reason: "linear proj_in (use_linear_projection: SD2)"),
        Rule(naming: .diffusers, test: .rank(under: "unet.", suffix: ".proj_in.weight", rank: 4), outcome: .family(.sd1),
             reason: "1×1 convolution proj_in (SD1)"),
    ]

    /// Detects naming and family of the checkpoint at `path` (for messages) from its keys and
    /// the shape of a key (`shape` returns nil for unknown keys).
    public static func detect(path: String, keys: [String], shape: (String) -> [Int]?) throws -> FamilyDetection {
        let sample = Array(keys.prefix(5))
        let naming = try naming(path: path, keys: keys)
        for rule in rules where rule.naming == naming && holds(rule.test, keys: keys, shape: shape) {
            switch rule.outcome {
            case .family(let family):
                return FamilyDetection(family: family, naming: naming, rule: rule.reason)
            case .unsupported(let why):
                throw ModelDetectionError(path: path, rule: why, sampleKeys: sample)
            }
        }
        throw ModelDetectionError(
            path: path,
            rule: "cannot tell SD1/SD2/SDXL: no SD text encoder, no SDXL label/add embedding, no transformer proj_in",
            sampleKeys: sample)
    }

    /// The naming of a checkpoint's keys, told by where its UNet is.
    public static func naming(path: String, keys: [String]) throws -> ModelNaming {
        guard let naming = unetPrefix.first(where: { entry in keys.contains { $0.hasPrefix(entry.1) } })?.0 else {
            throw ModelDetectionError(
                path: path,
                rule: "no UNet weights (a single file has model.diffusion_model.…, a diffusers folder unet/…)",
                sampleKeys: Array(keys.prefix(5)))
        }
        return naming
    }

    static func holds(_ test: Test, keys: [String], shape: (String) -> [Int]?) -> Bool {
        switch test {
        case .keyPrefix(let prefix):
            return keys.contains { $0.hasPrefix(prefix) }
        case .key(let key):
            return shape(key) != nil
        case let .rank(under, suffix, rank):
            // The first proj_in decides: every transformer of a model uses the same projection.
            guard let key = keys.first(where: { $0.hasPrefix(under) && $0.hasSuffix(suffix) }) else { return false }
            return shape(key)?.count == rank
        }
    }
}
