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
        // Stored in F32 or, when exact there, in the checkpoint's dtype: widening is exact.
        ModuleDelta(weight: weightDelta?.to(.f32), bias: biasDelta?.to(.f32))
    }
}
