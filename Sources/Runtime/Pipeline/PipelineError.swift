/// Errors of a generation, each naming the file, option or rule involved.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    /// A config file that cannot be used.
    case badConfiguration(path: String, reason: String)
    /// A generation setting out of range (`setting`: the option's name).
    case badParameter(setting: String, reason: String)
    /// The model lacks a part the request needs (e.g. a VAE to decode).
    case missingComponent(model: String, component: String, hint: String)
    /// A `<lora:name>` with no such file; `candidates`: the closest names available.
    case unknownNetwork(name: String, directory: String?, candidates: [String])
    /// A LoRA file that cannot be read or that no method accepts.
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
        case let .unknownNetwork(name, directory, candidates):
            let place = directory.map { " in \($0)" } ?? " (no --lora-dir given)"
            let close = candidates.isEmpty ? "" : "; closest names: \(candidates.joined(separator: ", "))"
            return "no LoRA named '\(name)'\(place)\(close)"
        case let .networkLoadFailed(name, path, reason):
            return "LoRA '\(name)' (\(path)): \(reason)"
        case let .badNoise(path, reason):
            return "\(path): \(reason)"
        case let .unsupportedModel(model, reason):
            return "\(model): \(reason)"
        }
    }
}
