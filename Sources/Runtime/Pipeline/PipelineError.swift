/// Errors of a generation, each naming the file, option or rule involved.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    /// A config file that cannot be used.
    case badConfiguration(path: String, reason: String)
    /// A generation setting out of range (`setting`: the option's name).
    case badParameter(setting: String, reason: String)
    /// The model lacks a part the request needs (e.g. a VAE to decode).
    case missingComponent(model: String, component: String, hint: String)
    /// A prompt names an extra network (`kind`: "LoRA", "hypernetwork") but the generation was
    /// given no models folders to find it in (no `AdapterContext`).
    case noNetworkFolder(kind: String, name: String)
    /// An extra-network file that cannot be read or that no method accepts.
    case networkLoadFailed(name: String, path: String, reason: String)
    /// A `--noise` tensor file that does not hold one tensor of the latent shape.
    case badNoise(path: String, reason: String)
    /// The model is a kind the txt2img pipeline does not run.
    case unsupportedModel(model: String, reason: String)

    public var description: String {
        switch self {
        case let .badConfiguration(path, reason):
            return "\(path): \(reason)"
        case let .badParameter(setting, reason):
            return "\(setting): \(reason)"
        case let .missingComponent(model, component, hint):
            return "\(model): the model has no \(component)" + (hint.isEmpty ? "" : "; \(hint)")
        case let .noNetworkFolder(kind, name):
            return "the prompt names the \(kind) '\(name)', but no folder to find it in was given (--models-dir, --lora-dir, --hypernetwork-dir)"
        case let .networkLoadFailed(name, path, reason):
            return "'\(name)' (\(path)): \(reason)"
        case let .badNoise(path, reason):
            return "\(path): \(reason)"
        case let .unsupportedModel(model, reason):
            return "\(model): \(reason)"
        }
    }
}
