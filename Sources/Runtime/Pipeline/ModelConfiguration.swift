import Foundation
import Host

/// What a checkpoint's tensors do not say, gathered for the whole pipeline: the UNet's head
/// layout and norm groups, the VAE's scaling factor and norm groups, the text encoders' head
/// counts and activations, and whether the UNet predicts ε or v.
///
/// Where it comes from, first match wins per field:
/// 1. explicit values (`--prediction`);
/// 2. a diffusers config folder: the model itself when it is a diffusers folder, or one given
///    for a single file (diffusers' `from_single_file(config=…)` convention): `unet/config.json`,
///    `vae/config.json`, `text_encoder[_2]/config.json`, `scheduler/scheduler_config.json`
///    (`prediction_type`);
/// 3. A1111's sidecar `<checkpoint stem>.yaml` beside a single file (`parameterization: "v"`,
///    `num_heads`, `num_head_channels`);
/// 4. the released models' settings for the family (`UNetConfig.standard`, `VAEConfig.standard`).
///
/// v-prediction cannot be told from the weights. A1111 additionally probes SD2 single files with
/// one UNet call (`StableDiffusionPipeline` does that when nothing above decided; see
/// `predictionSource`).
public struct ModelConfiguration: Sendable {
    public var unet: UNetConfig
    public var vae: VAEConfig
    /// Per text encoder: head count from a config (nil: the encoder's own default).
    public var textEncoderHeads: [Int?]
    /// Per text encoder: activation from a config (nil: the encoder's own default).
    public var textEncoderActivations: [Activation?]
    /// Where the prediction type came from ("default", "--prediction", a file path, …); nil
    /// while it is only the default, so the pipeline may still probe (A1111's SD2 check).
    public var predictionSource: String?
    /// Config files read, for reports.
    public var sources: [String]

    public var prediction: ModelPrediction {
        get { unet.prediction }
        set { unet.prediction = newValue }
    }

    /// The released models' settings for `family` (ε prediction, not yet decided).
    public static func standard(for family: ModelFamily) -> ModelConfiguration {
        ModelConfiguration(unet: .standard(for: family), vae: .standard(for: family),
                           textEncoderHeads: Array(repeating: nil, count: family.textEncoderCount),
                           textEncoderActivations: Array(repeating: nil, count: family.textEncoderCount),
                           predictionSource: nil, sources: [])
    }

    /// The configuration of `model` (see the type's documentation for the order).
    /// - `configDirectory`: a diffusers folder (or just its config files) for a single file.
    /// - `prediction`: forces the prediction type.
    public static func resolve(for model: ModelWeights, configDirectory: String? = nil,
                               prediction: ModelPrediction? = nil) throws -> ModelConfiguration {
        var configuration = ModelConfiguration.standard(for: model.family)
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let ownFolder = model.naming == .diffusers && fm.fileExists(atPath: model.path, isDirectory: &isDirectory)
            && isDirectory.boolValue ? model.path : nil
        if let folder = configDirectory ?? ownFolder {
            if configDirectory != nil {
                guard fm.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw PipelineError.badConfiguration(path: folder, reason: "not a folder (expected a diffusers folder with unet/config.json, …)")
                }
            }
            try configuration.read(diffusersFolder: folder, family: model.family)
        } else if model.naming == .singleFile {
            try configuration.read(sidecarOf: model.path)
        }
        if let prediction {
            configuration.prediction = prediction
            configuration.predictionSource = "--prediction"
        }
        return configuration
    }

    /// Reads the config files of a diffusers folder that exist (none is required).
    mutating func read(diffusersFolder folder: String, family: ModelFamily) throws {
        let base = URL(fileURLWithPath: folder)
        func json(_ relative: String) throws -> (path: String, object: [String: Any])? {
            let path = base.appendingPathComponent(relative).path
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw PipelineError.badConfiguration(path: path, reason: "not a JSON object")
            }
            sources.append(path)
            return (path, object)
        }
        if let (path, _) = try json("unet/config.json") {
            do {
                let data = FileManager.default.contents(atPath: path)!
                unet = try UNetConfig(diffusersConfig: data, prediction: unet.prediction)
            } catch {
                throw PipelineError.badConfiguration(path: path, reason: "\(error)")
            }
        }
        if let (_, vaeConfig) = try json("vae/config.json") {
            if let factor = vaeConfig["scaling_factor"] as? Double { vae.scalingFactor = Float(factor) }
            if let groups = vaeConfig["norm_num_groups"] as? Int { vae.normGroups = groups }
        }
        for index in 0..<family.textEncoderCount {
            let name = index == 0 ? "text_encoder" : "text_encoder_\(index + 1)"
            guard let (path, encoder) = try json("\(name)/config.json") else { continue }
            textEncoderHeads[index] = encoder["num_attention_heads"] as? Int
            switch encoder["hidden_act"] as? String {
            case nil: break
            case "quick_gelu": textEncoderActivations[index] = .quickGELU
            case "gelu": textEncoderActivations[index] = .gelu
            case let other?:
                throw PipelineError.badConfiguration(path: path, reason: "hidden_act \(other.debugDescription) is not quick_gelu or gelu")
            }
        }
        if let (path, scheduler) = try json("scheduler/scheduler_config.json"),
           let type = scheduler["prediction_type"] as? String {
            switch type {
            case "epsilon": prediction = .epsilon
            case "v_prediction": prediction = .v
            default:
                throw PipelineError.badConfiguration(path: path, reason: "prediction_type \(type.debugDescription) is not epsilon or v_prediction")
            }
            predictionSource = path
        }
    }

    /// Reads A1111's `<stem>.yaml` beside a single-file checkpoint, when there is one. Only the
    /// three fields the runtime needs are looked for, as `key: value` lines (the ldm config
    /// format; no YAML parser: nested keys are unique in those files).
    mutating func read(sidecarOf checkpoint: String) throws {
        let path = (checkpoint as NSString).deletingPathExtension + ".yaml"
        guard let data = FileManager.default.contents(atPath: path) else { return }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PipelineError.badConfiguration(path: path, reason: "not UTF-8 text")
        }
        sources.append(path)
        let fields = Self.yamlScalars(text)
        if let value = fields["parameterization"] {
            switch value {
            case "v": prediction = .v
            case "eps": prediction = .epsilon
            default:
                throw PipelineError.badConfiguration(path: path, reason: "parameterization \(value.debugDescription) is not \"eps\" or \"v\"")
            }
            predictionSource = path
        }
        if let width = fields["num_head_channels"].flatMap(Int.init), width > 0 {
            unet.attentionHeads = .width(width)
        } else if let heads = fields["num_heads"].flatMap(Int.init), heads > 0 {
            unet.attentionHeads = .count([heads])
        }
    }

    /// `key: value` pairs of a YAML text (first occurrence of each key; quotes and trailing
    /// comments removed).
    static func yamlScalars(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            if !key.isEmpty, !value.isEmpty, fields[key] == nil { fields[key] = value }
        }
        return fields
    }
}
