/// A textual-inversion file that breaks a rule of its format. Thrown at load, never a crash.
public struct TextualInversionError: Error, CustomStringConvertible, Equatable {
    /// The file, as the tensor source names it.
    public let file: String
    /// The key concerned ("" for file-level problems).
    public let key: String
    /// The rule that is broken.
    public let rule: Rule

    /// The rules an embedding file can break.
    public enum Rule: Equatable, CustomStringConvertible {
        /// `string_to_param` holds several terms (A1111: "embedding file has multiple terms in it").
        case multipleTerms(count: Int)
        /// The vectors are not floating point, or not `[vectors, width]` / `[width]`.
        case badTensor(dtype: String, shape: [Int])
        /// An SDXL embedding whose `clip_l` and `clip_g` disagree on the number of vectors,
        /// or share a width (they must be one tensor per text encoder).
        case sdxlMismatch(clipL: [Int], clipG: [Int])

        public var description: String {
            switch self {
            case .multipleTerms(let count):
                return "string_to_param holds \(count) terms; an embedding file holds exactly one"
            case let .badTensor(dtype, shape):
                return "\(dtype) tensor of shape \(shape); an embedding is floating point [vectors, width] or [width]"
            case let .sdxlMismatch(l, g):
                return "clip_l \(l) and clip_g \(g) must have the same number of vectors and different widths"
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
