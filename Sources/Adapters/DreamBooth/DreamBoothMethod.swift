import Host
import Tensor

/// Registers the "dreambooth" method (difference files written by `adapterhost diff`).
public func registerDreamBooth(into registry: AdapterRegistry) throws {
    try registry.register(DreamBoothMethod())
}

/// DreamBooth (or any full fine-tune) as an adapter: the difference between the tuned
/// checkpoint and its base, as ``CheckpointDiff`` writes it.
///
/// A difference file is a safetensors file whose keys are the checkpoint's own keys (so the
/// host's `TargetIndex` resolves `<layer>.weight`/`<layer>.bias` by the layer's key stem), with
/// metadata `adapterhost.method = dreambooth`, `adapterhost.base_sha256` (the exact base file),
/// `adapterhost.base_family`, and the files' names. Detection is by that metadata alone.
///
/// Loading gives one weight-independent module per layer (weight and bias differences
/// together), the base family, and `requiredBaseHash`: `PatchPlan` refuses any model file
/// other than the recorded base unless forced. Weight w gives W + w·(tuned − base): w = 1 is
/// the tuned checkpoint (bit-exact wherever the difference allows, see ``CheckpointDiff``),
/// w = 0.5 halfway. A1111-style separate weights apply: text-encoder layers take the
/// text-encoder weight, UNet and VAE layers the UNet weight.
public final class DreamBoothMethod: AdapterMethod {
    public init() {}

    public var id: String { "dreambooth" }
    public var summary: String { "DreamBooth / full fine-tune as a difference from its exact base (adapterhost diff)" }

    public func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] {
        guard metadata[DiffMetadata.method] == id else { return [] }
        var order: [String] = []
        var byModule: [String: [String]] = [:]
        for key in keys {
            let module = Self.moduleName(of: key)
            if byModule[module] == nil { order.append(module) }
            byModule[module, default: []].append(key)
        }
        return order.map { ModuleClaim(module: $0, keys: byModule[$0]!) }
    }

    public func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
        let metadata = source.metadata
        var family: ModelFamily?
        if let text = metadata[DiffMetadata.baseFamily] {
            guard let f = ModelFamily(rawValue: text) else {
                throw DreamBoothError(file: source.path, key: DiffMetadata.baseFamily,
                                      rule: .badMetadata(value: text, expected: ModelFamily.allCases.map(\.rawValue).joined(separator: ", ")))
            }
            family = f
        }
        var hash: String?
        if let text = metadata[DiffMetadata.baseSHA256] {
            let lower = text.lowercased()
            guard lower.count == 64, lower.allSatisfy({ $0.isHexDigit }) else {
                throw DreamBoothError(file: source.path, key: DiffMetadata.baseSHA256,
                                      rule: .badMetadata(value: text, expected: "64 hexadecimal digits (SHA-256)"))
            }
            hash = lower
        }
        var modules: [any AdapterModule] = []
        for claim in claims {
            var weight: Tensor?, bias: Tensor?
            for key in claim.keys {
                let t = try source.tensor(key)
                guard t.dtype.isFloatingPoint else {
                    throw DreamBoothError(file: source.path, key: key, rule: .badTensor(dtype: t.dtype.rawValue, shape: t.shape))
                }
                if key.hasSuffix(".bias") && key != claim.module { bias = t } else { weight = t }
            }
            modules.append(DreamBoothModule(name: claim.module, weightDelta: weight, biasDelta: bias))
        }
        return Adapter(path: source.path, methodIDs: [id], format: "adapterhost-diff", baseModel: family,
                       metadata: metadata, modules: modules, requiredBaseHash: hash)
    }

    /// The layer a checkpoint key belongs to: the key without `.weight`/`.bias` (what
    /// `TargetIndex` resolves); any other key is its own module.
    static func moduleName(of key: String) -> String {
        for suffix in [".weight", ".bias"] where key.hasSuffix(suffix) && key.count > suffix.count {
            return String(key.dropLast(suffix.count))
        }
        return key
    }
}

/// The metadata keys of a difference file.
public enum DiffMetadata {
    /// "dreambooth".
    public static let method = "adapterhost.method"
    /// SHA-256 (hex) of the base file.
    public static let baseSHA256 = "adapterhost.base_sha256"
    /// The base's family ("sd1", "sd2", "sdxl").
    public static let baseFamily = "adapterhost.base_family"
    /// File names of the base and the tuned checkpoint.
    public static let baseFile = "adapterhost.base_file"
    public static let tunedFile = "adapterhost.tuned_file"
    /// Changed tensors left out because no adapter target of the host matches them.
    public static let omittedTensors = "adapterhost.omitted_tensors"
    /// Elements the merge at weight 1 cannot give back bit-exactly (see ``CheckpointDiff``).
    public static let unreproducibleElements = "adapterhost.unreproducible_elements"
}
