/// A hypernetwork file that breaks a rule of A1111's format, or an input the transform cannot
/// take. Thrown at load (or by `transform`), never a crash.
public struct HypernetworkError: Error, CustomStringConvertible, Equatable {
    /// The file, as the tensor source names it.
    public let file: String
    /// The key or option concerned ("" for file-level problems).
    public let key: String
    /// The rule that is broken.
    public let rule: Rule

    public enum Rule: Equatable, CustomStringConvertible {
        /// An option's value cannot be read (e.g. `layer_structure` that is no list of numbers).
        case badOption(value: String, expected: String)
        /// `layer_structure` must start and end with 1 (A1111 asserts both).
        case badLayerStructure([Double])
        /// An activation A1111 does not accept, or one whose module cannot run on a context
        /// (softmax-like ones over an implicit dimension, GLU halving the width, …).
        case unsupportedActivation(String)
        /// A tensor the option-defined layer stack needs is missing (A1111's strict
        /// `load_state_dict` would fail the same way).
        case missingTensor
        /// A tensor the layer stack has no place for.
        case unexpectedTensor
        /// A tensor's shape differs from the one its layer needs.
        case badShape(shape: [Int], expected: [Int])
        /// A context whose last axis is not `width`.
        case contextWidth(shape: [Int], width: Int)

        public var description: String {
            switch self {
            case let .badOption(value, expected): return "value \(value) cannot be read; expected \(expected)"
            case .badLayerStructure(let s): return "layer_structure \(s) must start and end with 1"
            case .unsupportedActivation(let a): return "activation function '\(a)' is not supported"
            case .missingTensor: return "tensor missing for the layer stack the options describe"
            case .unexpectedTensor: return "tensor has no place in the layer stack the options describe"
            case let .badShape(shape, expected): return "shape \(shape); the layer needs \(expected)"
            case let .contextWidth(shape, width): return "context of shape \(shape) is not of width \(width)"
            }
        }
    }

    public init(file: String, key: String, rule: Rule) {
        self.file = file
        self.key = key
        self.rule = rule
    }

    public var description: String {
        key.isEmpty ? "\(file): \(rule)" : "\(file): '\(key)': \(rule)"
    }
}
