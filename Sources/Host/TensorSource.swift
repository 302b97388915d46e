import Tensor

/// A file of named tensors, as adapter methods see it: names, metadata and lazy tensors.
/// Safetensors files conform; the pickle reader (.pt/.ckpt/.bin) conforms later.
public protocol TensorSource: AnyObject {
    /// The file's path, for messages.
    var path: String { get }
    /// Tensor names in file order.
    var keys: [String] { get }
    /// String metadata (`__metadata__` in safetensors); empty when the format has none.
    var metadata: [String: String] { get }
    /// Dtype and shape without reading data.
    func info(_ key: String) -> (dtype: DType, shape: [Int])?
    /// The tensor (zero-copy where the format allows). Throws for an unknown key.
    func tensor(_ key: String) throws -> Tensor
}

/// A key a method asked for is not in the file.
public struct MissingTensorError: Error, CustomStringConvertible {
    public let path: String
    public let key: String
    public var description: String { "\(path): tensor '\(key)' not found" }
}

/// An in-memory tensor source (tests, plugins' outputs, converted files).
public final class InMemoryTensorSource: TensorSource {
    public let path: String
    public private(set) var keys: [String]
    public var metadata: [String: String]
    private var tensors: [String: Tensor]

    /// A source holding `tensors` (kept in the given key order).
    public init(path: String = "<memory>", tensors: [(String, Tensor)], metadata: [String: String] = [:]) {
        self.path = path
        self.keys = tensors.map(\.0)
        self.tensors = Dictionary(tensors, uniquingKeysWith: { _, last in last })
        self.metadata = metadata
    }

    public func info(_ key: String) -> (dtype: DType, shape: [Int])? {
        tensors[key].map { ($0.dtype, $0.shape) }
    }

    public func tensor(_ key: String) throws -> Tensor {
        guard let t = tensors[key] else { throw MissingTensorError(path: path, key: key) }
        return t
    }
}
