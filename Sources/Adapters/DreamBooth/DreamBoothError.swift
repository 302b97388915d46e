/// Why a checkpoint difference cannot be made or loaded. Thrown before anything is written.
public struct DreamBoothError: Error, CustomStringConvertible, Equatable {
    /// The file concerned.
    public let file: String
    /// The tensor concerned ("" for file-level problems).
    public let key: String
    /// The rule that is broken.
    public let rule: Rule

    public enum Rule: Equatable, CustomStringConvertible {
        /// A tensor one checkpoint has and the other lacks.
        case onlyInOne(presentIn: String, missingFrom: String)
        /// Same key, different shapes.
        case shapeMismatch(base: [Int], tuned: [Int])
        /// Same key, different dtypes.
        case dtypeMismatch(base: String, tuned: String)
        /// A changed tensor that is not floating point (a difference of integers is no weight change).
        case nonFloatChanged(dtype: String)
        /// The output would replace one of the inputs.
        case outputIsInput(input: String)
        /// Nothing differs.
        case identical
        /// Difference-file metadata that cannot be read.
        case badMetadata(value: String, expected: String)
        /// A tensor of a difference file that cannot be a weight difference.
        case badTensor(dtype: String, shape: [Int])

        public var description: String {
            switch self {
            case let .onlyInOne(present, missing): return "tensor is in \(present) but not in \(missing); the checkpoints must have the same keys"
            case let .shapeMismatch(b, t): return "shape \(b) in the base but \(t) in the tuned checkpoint"
            case let .dtypeMismatch(b, t): return "dtype \(b) in the base but \(t) in the tuned checkpoint"
            case .nonFloatChanged(let d): return "\(d) tensor differs; only floating-point tensors can be differenced"
            case .outputIsInput(let input): return "the output is the input \(input); refusing to overwrite it"
            case .identical: return "the checkpoints are identical; there is no difference to write"
            case let .badMetadata(value, expected): return "metadata value '\(value)' cannot be used; expected \(expected)"
            case let .badTensor(dtype, shape): return "\(dtype) tensor of shape \(shape) is no weight difference"
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
