import CAdapterHostPlugin
import Tensor

/// One module of an adapter a plugin loaded. Its delta (and bypass term) is computed by the
/// plugin; the host copies the plugin-owned result and checks it (F32, the weight's shape)
/// before anything uses it.
///
/// A1111's `dyn` rank truncation does not reach plugins (ABI v1 has no parameter for it): the
/// option is ignored.
public final class PluginModule: AdapterModule {
    public let name: String
    public let moduleType: String
    public let rank: Int?
    public let alpha: Float?
    public let dependsOnWeight: Bool
    /// Index of the module in the plugin's adapter (the order of `load`'s module list).
    let index: Int
    let handle: PluginAdapterHandle

    init(name: String, index: Int, moduleType: String, rank: Int?, alpha: Float?, dependsOnWeight: Bool,
         handle: PluginAdapterHandle) {
        self.name = name
        self.index = index
        self.moduleType = moduleType
        self.rank = rank
        self.alpha = alpha
        self.dependsOnWeight = dependsOnWeight
        self.handle = handle
    }

    private var library: PluginLibrary { handle.library }

    public func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let w = weight.to(.f32)  // contiguous F32; the plugin only reads it (ABI rule)
        guard w.rank <= Int(AH_MAX_RANK) else {
            throw PluginError.badOutput(path: library.path, method: library.methodID, operation: "delta", module: name,
                                        reason: "the weight's rank \(w.rank) exceeds AH_MAX_RANK")
        }
        let deltaFn = library.descriptor.pointee.delta!  // non-NULL: checked at load
        let result: Tensor = try library.locked {
            var input = PluginTensorBridge.view(of: w)
            var out = ah_tensor()
            var err = ah_error()
            let status = withExtendedLifetime(w) {
                deltaFn(handle.raw, index, &input, options.strength, &out, &err)
            }
            guard status == Int32(AH_OK.rawValue) else {
                throw PluginError.pluginFailed(path: library.path, method: library.methodID, operation: "delta",
                                               module: name, status: status, message: PluginTensorBridge.message(of: err))
            }
            return try checkedCopy(out, operation: "delta") { shape in
                shape == w.shape ? nil : "shape \(shape) differs from the weight's shape \(w.shape)"
            }
        }
        return ModuleDelta(weight: result)
    }

    public func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? {
        guard let forward = library.descriptor.pointee.forward else { return nil }
        var abiLayer = ah_layer()
        switch layer {
        case .linear:
            abiLayer = ah_layer(kind: Int32(AH_LAYER_LINEAR.rawValue), stride: 1, padding: 0)
        case let .conv2d(stride, padding):
            guard x.rank == 4 else { return nil }
            abiLayer = ah_layer(kind: Int32(AH_LAYER_CONV2D.rawValue), stride: Int32(stride), padding: Int32(padding))
        case .norm, .embedding:
            return nil
        }
        let input = x.to(.f32)
        guard input.rank >= 1, input.rank <= Int(AH_MAX_RANK) else { return nil }
        return try library.locked { () throws -> Tensor? in
            var view = PluginTensorBridge.view(of: input)
            var out = ah_tensor()
            var err = ah_error()
            let status = withExtendedLifetime(input) {
                forward(handle.raw, index, &view, &abiLayer, options.strength, &out, &err)
            }
            if status == Int32(AH_ERR_UNSUPPORTED.rawValue) { return nil }  // ABI: use the dense delta
            guard status == Int32(AH_OK.rawValue) else {
                throw PluginError.pluginFailed(path: library.path, method: library.methodID, operation: "forward",
                                               module: name, status: status, message: PluginTensorBridge.message(of: err))
            }
            return try checkedCopy(out, operation: "forward") { shape in
                // The host cannot know the layer's output width here; it checks what it can:
                // every dimension but the features (linear) or channels (conv) is the input's.
                let x = input.shape
                switch layer {
                case .linear:
                    return shape.count == x.count && shape.dropLast() == x.dropLast() && shape.last! > 0
                        ? nil : "shape \(shape) does not fit a linear layer's output for input \(x)"
                default:
                    return shape.count == 4 && shape[0] == x[0] && shape[1] > 0
                        ? nil : "shape \(shape) does not fit a conv2d layer's output for input \(x)"
                }
            }
        }
    }

    /// Copies a plugin-returned tensor after checking dtype and shape (`shapeProblem` returns a
    /// reason when the shape is wrong). Must run under the plugin lock: the data is plugin-owned.
    private func checkedCopy(_ out: ah_tensor, operation: String, shapeProblem: ([Int]) -> String?) throws -> Tensor {
        func bad(_ reason: String) -> PluginError {
            .badOutput(path: library.path, method: library.methodID, operation: operation, module: name, reason: reason)
        }
        let shape: [Int]
        switch PluginTensorBridge.checkedShape(of: out) {
        case .success(let s): shape = s
        case .failure(let p): throw bad(p.reason)
        }
        if let reason = shapeProblem(shape) { throw bad(reason) }
        switch PluginTensorBridge.copy(out, shape: shape) {
        case .success(let t): return t
        case .failure(let p): throw bad(p.reason)
        }
    }
}
