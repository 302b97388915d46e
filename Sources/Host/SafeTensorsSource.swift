import SafeTensors
import Tensor

/// Safetensors files are tensor sources: keys in header order, `__metadata__` as metadata,
/// zero-copy tensors.
extension SafeTensorsFile: TensorSource {
    public var keys: [String] { names }

    public func info(_ key: String) -> (dtype: DType, shape: [Int])? {
        guard let info = try? info(named: key) else { return nil }
        return (info.dtype, info.shape)
    }

    public func tensor(_ key: String) throws -> Tensor {
        try tensor(named: key)
    }
}
