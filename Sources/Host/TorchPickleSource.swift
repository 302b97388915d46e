import SafeTensors
import Tensor
import TorchPickle

/// PyTorch pickle files (.pt/.ckpt/.bin) are tensor sources: keys are the flattened tensor keys
/// (nested dicts joined with ".", e.g. `string_to_param.*`, `768.0.linear.0.weight`), tensors
/// are zero-copy views where the file allows. The format has no string metadata; its plain
/// values (an embedding's `name` and `step`, a hypernetwork's `layer_structure`,
/// `activation_func`, `is_layer_norm`, …) are in `TorchFile.values` under the same dotted keys.
extension TorchFile: TensorSource {
    /// Always empty: pickled files carry typed values instead (see `values`).
    public var metadata: [String: String] { [:] }

    public func info(_ key: String) -> (dtype: DType, shape: [Int])? {
        tensor(named: key).map { ($0.dtype, $0.shape) }
    }

    public func tensor(_ key: String) throws -> Tensor {
        guard let t = tensor(named: key) else { throw MissingTensorError(path: path, key: key) }
        return t
    }
}

/// A tensor source for an adapter file by its extension: safetensors, or a PyTorch pickle
/// (`.pt`, `.ckpt`, `.bin`, `.pth`), read by the restricted unpickler.
public func openAdapterSource(_ path: String) throws -> TensorSource {
    path.lowercased().hasSuffix(".safetensors") ? try SafeTensorsFile(path: path) : try TorchFile(path: path)
}
