import Foundation
import Host
import Tensor

/// Errors building or running a text encoder.
public enum TextEncoderError: Error, CustomStringConvertible, Equatable {
    /// Inputs that do not fit the encoder (the reason names the rule).
    case badInput(String)
    /// The architecture cannot be worked out (the reason names the tensor or setting).
    case badConfiguration(model: String, part: String, reason: String)

    public var description: String {
        switch self {
        case .badInput(let reason):
            return "text encoder: \(reason)"
        case let .badConfiguration(model, part, reason):
            return "\(model): text encoder \(part): \(reason)"
        }
    }
}

/// What a CLIP text encoder's tensors do not fully say, and what they do.
///
/// Width, vocabulary, positions, depth and the projection come from the tensors. The head
/// count and activation do not: they come from the diffusers folder's `config.json` when there
/// is one (`num_attention_heads`, `hidden_act`, `layer_norm_eps`), else from the released
/// models: 64-wide heads (CLIP-L 12, OpenCLIP-H 16, bigG 20), quick GELU for OpenAI's CLIP-L
/// (SD1, SDXL's first encoder), exact GELU for OpenCLIP (SD2, SDXL's second).
public struct TextEncoderConfiguration: Sendable, Equatable {
    /// Hidden width (768 CLIP-L, 1024 OpenCLIP-H, 1280 bigG).
    public var width: Int
    /// Number of transformer blocks (12, 23 or 24, 32).
    public var layerCount: Int
    /// Attention heads per block.
    public var headCount: Int
    /// The MLP's activation.
    public var activation: Activation
    /// Rows of the token table (49408).
    public var vocabularySize: Int
    /// Rows of the position table (77): the longest sequence.
    public var positionCount: Int
    /// Output width of `text_projection` (nil: no projection, e.g. SD1/SD2).
    public var projectionWidth: Int?
    /// LayerNorm ε of every norm.
    public var layerNormEps: Float

    public init(width: Int, layerCount: Int, headCount: Int, activation: Activation, vocabularySize: Int,
                positionCount: Int, projectionWidth: Int?, layerNormEps: Float = 1e-5) {
        self.width = width
        self.layerCount = layerCount
        self.headCount = headCount
        self.activation = activation
        self.vocabularySize = vocabularySize
        self.positionCount = positionCount
        self.projectionWidth = projectionWidth
        self.layerNormEps = layerNormEps
    }

    /// The configuration of `part` of `model` (`root`: its loader), with `headCount` and
    /// `activation` forced when given.
    static func detect(root: WeightLoader, model: ModelWeights, part: ModelPart, headCount: Int?,
                       activation: Activation?) throws -> TextEncoderConfiguration {
        func fail(_ reason: String) -> TextEncoderError {
            .badConfiguration(model: model.path, part: part.description, reason: reason)
        }
        guard root.contains("text_model.embeddings.token_embedding.weight") else {
            throw WeightLoaderError.missingComponent(model: model.path, component: "text encoder \(part)")
        }
        let tokens = try root.parameter("text_model.embeddings.token_embedding.weight").shape
        let positions = try root.parameter("text_model.embeddings.position_embedding.weight").shape
        guard tokens.count == 2, positions.count == 2, positions[1] == tokens[1] else {
            throw fail("token table \(tokens) and position table \(positions) are not [rows, width] of one width")
        }
        let width = tokens[1]
        let layers = root.count("text_model.encoder.layers", probe: "layer_norm1.weight")
        guard layers > 0 else { throw fail("no transformer blocks (text_model.encoder.layers.0.*)") }
        let projection = try root.optionalParameter("text_projection.weight")?.shape[0]

        let file = DiffusersTextEncoderConfig(model: model, part: part)
        let heads = headCount ?? file?.headCount ?? width / 64
        guard heads > 0, width % heads == 0 else {
            throw fail("width \(width) does not split into \(heads) heads (pass the head count)")
        }
        let act = try activation ?? file?.activation() ?? defaultActivation(family: model.family, part: part)
        return TextEncoderConfiguration(width: width, layerCount: layers, headCount: heads, activation: act,
                                        vocabularySize: tokens[0], positionCount: positions[0],
                                        projectionWidth: projection, layerNormEps: file?.layerNormEps ?? 1e-5)
    }

    /// OpenAI's CLIP-L uses quick GELU; the OpenCLIP encoders exact GELU.
    static func defaultActivation(family: ModelFamily, part: ModelPart) -> Activation {
        switch (family, part) {
        case (.sd2, _), (.sdxl, .textEncoder(1)): return .gelu
        default: return .quickGELU
        }
    }
}

/// The fields of a diffusers text encoder's `config.json` the runtime reads.
struct DiffusersTextEncoderConfig {
    let path: String
    let headCount: Int?
    let hiddenAct: String?
    let layerNormEps: Float?

    /// `<folder>/text_encoder[_2]/config.json` of a diffusers-folder model; nil when there is none.
    init?(model: ModelWeights, part: ModelPart) {
        guard model.naming == .diffusers, case .textEncoder(let index) = part else { return nil }
        let folder = index == 0 ? "text_encoder" : "text_encoder_\(index + 1)"
        let path = (model.path as NSString).appendingPathComponent("\(folder)/config.json")
        guard let data = FileManager.default.contents(atPath: path),
              let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        self.path = path
        headCount = json["num_attention_heads"] as? Int
        hiddenAct = json["hidden_act"] as? String
        layerNormEps = (json["layer_norm_eps"] as? Double).map(Float.init)
    }

    /// `hidden_act` as an activation (nil when absent).
    func activation() throws -> Activation? {
        switch hiddenAct {
        case nil: return nil
        case "quick_gelu": return .quickGELU
        case "gelu": return .gelu
        case let other?:
            throw TextEncoderError.badConfiguration(model: path, part: "config",
                                                    reason: "hidden_act \(other.debugDescription) is not quick_gelu or gelu")
        }
    }
}
