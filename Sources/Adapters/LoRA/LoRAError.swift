/// A LoRA-family file that breaks a rule of its format. Thrown at load, never a crash.
public struct LoRAFormatError: Error, CustomStringConvertible, Equatable {
    /// The file, as the tensor source names it.
    public let file: String
    /// The module (as written in the file), or "" for file-level problems.
    public let module: String
    /// The rule that is broken.
    public let rule: Rule

    /// The rules a module can break.
    public enum Rule: Equatable, CustomStringConvertible {
        /// A tensor the module type needs is absent (e.g. `lora_up.weight` for a `lora_down.weight`).
        case missingTensor(suffix: String, moduleType: String)
        /// Factors whose shared (rank) dimension disagrees.
        case rankMismatch(String)
        /// A tensor that must hold one number (alpha, scale) holds several.
        case notScalar(suffix: String, shape: [Int])
        /// A tensor's shape does not fit the module type.
        case badShape(suffix: String, shape: [Int], expected: String)
        /// Metadata the module's scale depends on cannot be read.
        case badMetadata(key: String, reason: String)
        /// A value outside what the type allows (e.g. a non-finite alpha).
        case badValue(suffix: String, reason: String)

        public var description: String {
            switch self {
            case let .missingTensor(suffix, type):
                return "a \(type) module needs '\(suffix)', which the file does not have"
            case let .rankMismatch(detail):
                return "factor ranks disagree: \(detail)"
            case let .notScalar(suffix, shape):
                return "'\(suffix)' must be a single number, but has shape \(shape)"
            case let .badShape(suffix, shape, expected):
                return "'\(suffix)' has shape \(shape); expected \(expected)"
            case let .badMetadata(key, reason):
                return "metadata '\(key)' cannot be used: \(reason)"
            case let .badValue(suffix, reason):
                return "'\(suffix)': \(reason)"
            }
        }
    }

    public init(file: String, module: String, rule: Rule) {
        self.file = file
        self.module = module
        self.rule = rule
    }

    public var description: String {
        module.isEmpty ? "\(file): \(rule)" : "\(file): module '\(module)': \(rule)"
    }
}
