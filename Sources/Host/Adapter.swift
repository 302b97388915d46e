import Tensor

/// Where a method comes from.
public enum MethodOrigin: Sendable, Equatable, CustomStringConvertible {
    case builtIn
    /// Loaded at run time from a plugin library at this path.
    case plugin(path: String)

    public var description: String {
        switch self {
        case .builtIn: return "built-in"
        case .plugin(let path): return "plugin \(path)"
        }
    }
}

/// A token embedding an adapter contributes (Textual Inversion, LoRA-bundled embeddings).
public struct TokenEmbedding {
    /// The word that triggers it in a prompt.
    public let name: String
    /// Vectors per text-encoder width (e.g. 768 for CLIP-L, 1280 for OpenCLIP-bigG):
    /// shape [tokens, width].
    public let vectorsByWidth: [Int: Tensor]
    public init(name: String, vectorsByWidth: [Int: Tensor]) {
        self.name = name
        self.vectorsByWidth = vectorsByWidth
    }
}

/// A transform of the attention context (hypernetworks): given the context `x` of width
/// `width`, the keys' and values' inputs. Nil when the adapter has no module for that width.
public protocol ContextTransform: AnyObject {
    func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)?
    /// The chained form: the keys' input `key` and the values' input `value` as earlier
    /// transforms left them (A1111's `apply_hypernetworks` feeds each hypernetwork the previous
    /// one's k and v outputs separately). Nil when the adapter has no module for that width.
    func transform(key: Tensor, value: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)?
}

extension ContextTransform {
    /// Default chained form from the single-context one (computes each branch twice;
    /// conformers with separate key/value paths override it).
    public func transform(key: Tensor, value: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        guard let fromKey = try transform(context: key, width: width, strength: strength),
              let fromValue = try transform(context: value, width: width, strength: strength) else { return nil }
        return (fromKey.key, fromValue.value)
    }
}

/// One adapter file, loaded: its modules plus any runtime hooks.
public final class Adapter {
    /// The file it came from.
    public let path: String
    /// The method(s) that loaded it: one id, or several for mixed files (e.g. LoRA + LoHa
    /// modules in one LyCORIS file).
    public let methodIDs: [String]
    /// File dialect for reports: "kohya", "peft", "diffusers", "lycoris", "a1111", ….
    public let format: String
    /// The base-model family the adapter was made for, when it can be told.
    public let baseModel: ModelFamily?
    /// The file's metadata.
    public let metadata: [String: String]
    /// Weight-changing modules.
    public let modules: [any AdapterModule]
    /// Token embeddings (Textual Inversion; LoRA-bundled embeddings).
    public let embeddings: [TokenEmbedding]
    /// Context transforms (hypernetworks).
    public let contextTransforms: [any ContextTransform]
    /// Keys of the file that no method took (reported, never silently dropped).
    public internal(set) var unclaimedKeys: [String] = []
    /// SHA-256 (lower-case hex) of the exact base checkpoint file the adapter was made
    /// against, when applying it to any other file is meaningless (DreamBooth differences).
    /// `PatchPlan` refuses another base unless forced.
    public let requiredBaseHash: String?

    public init(path: String, methodIDs: [String], format: String, baseModel: ModelFamily?,
                metadata: [String: String], modules: [any AdapterModule],
                embeddings: [TokenEmbedding] = [], contextTransforms: [any ContextTransform] = [],
                requiredBaseHash: String? = nil) {
        self.path = path
        self.methodIDs = methodIDs
        self.format = format
        self.baseModel = baseModel
        self.metadata = metadata
        self.modules = modules
        self.embeddings = embeddings
        self.contextTransforms = contextTransforms
        self.requiredBaseHash = requiredBaseHash?.lowercased()
    }
}
