import Host
import Tensor

/// One layer's full difference from its base: ΔW = tuned − base (and Δb for its bias), used
/// as it is (no rank, no scale): W' = W + strength·ΔW. Weight-independent, so several such
/// adapters (and LoRAs) commute on the same layer.
final class DreamBoothModule: LinearAdapterModule {
    let name: String
    let weightDelta: Tensor?
    let biasDelta: Tensor?

    init(name: String, weightDelta: Tensor?, biasDelta: Tensor?) {
        self.name = name
        self.weightDelta = weightDelta
        self.biasDelta = biasDelta
    }

    var moduleType: String { "dreambooth" }
    var changesBias: Bool { biasDelta != nil }

    func unitDelta(dynRank: Int?) throws -> ModuleDelta {
        // Stored in F64 (exact B − A, see TensorDifference), F32, or the checkpoint's dtype when
        // exact there. F64 stays F64: the host adds it in F64 so weight 1 gives B back exactly.
        ModuleDelta(weight: weightDelta.map(Self.computeForm), bias: biasDelta.map(Self.computeForm))
    }

    private static func computeForm(_ t: Tensor) -> Tensor {
        t.dtype == .f64 ? t.contiguous() : t.to(.f32)
    }
}
