import Host
import Tensor
import TorchPickle

/// Registers the "hypernetwork" method.
public func registerHypernetwork(into registry: AdapterRegistry) throws {
    try registry.register(HypernetworkMethod())
}

/// A1111 hypernetworks (`modules/hypernetworks/hypernetwork.py`).
///
/// File layout (`Hypernetwork.save`): a dict whose integer keys are context widths, each
/// holding a tuple `(k_state_dict, v_state_dict)` of two MLPs (see ``HypernetworkMLP``), plus
/// the options `layer_structure`, `activation_func`, `is_layer_norm`, `weight_initialization`,
/// `use_dropout`, `dropout_structure`, `last_layer_dropout`, `activate_output`, and `name`,
/// `step`, `sd_checkpoint`, `sd_checkpoint_name`, `optional_info`. Flattened, the tensors are
/// `<width>.<0|1>.linear.<N>.weight|bias` (0: keys, 1: values), or `linear1`/`linear2` in the
/// oldest files. The `.pt` is read through the safe pickle reader (options in its metadata);
/// a `.safetensors` with the same flattened keys and the options as `__metadata__` strings is
/// the same hypernetwork.
///
/// Loading gives an `Adapter` with one `HypernetworkTransform` in `contextTransforms` and no
/// weight modules. The prompt name is the file stem (A1111 lists hypernetworks by file name).
public final class HypernetworkMethod: AdapterMethod {
    public init() {}

    public var id: String { "hypernetwork" }
    public var summary: String { "A1111 hypernetworks (context MLPs on attention keys and values)" }

    public func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] {
        if let owner = metadata["adapterhost.method"], owner != id { return [] }
        var byWidth: [Int: [String]] = [:]
        for key in keys {
            guard let parsed = Self.parse(key) else { continue }
            byWidth[parsed.width, default: []].append(key)
        }
        return byWidth.keys.sorted().map { ModuleClaim(module: String($0), keys: byWidth[$0]!) }
    }

    public func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
        let metadata = Self.metadata(of: source)
        let options = try HypernetworkOptions(metadata: metadata, file: source.path)
        var pairs: [Int: (key: HypernetworkMLP, value: HypernetworkMLP)] = [:]
        for claim in claims {
            var halves: [[String: Tensor]] = [[:], [:]]
            var width = 0
            for key in claim.keys {
                guard let parsed = Self.parse(key) else { continue }
                width = parsed.width
                halves[parsed.half][parsed.rest] = try source.tensor(key)
            }
            let k = try HypernetworkMLP(width: width, options: options, tensors: halves[0], file: source.path,
                                        keyPrefix: "\(width).0.")
            let v = try HypernetworkMLP(width: width, options: options, tensors: halves[1], file: source.path,
                                        keyPrefix: "\(width).1.")
            pairs[width] = (k, v)
        }
        let storedName = HypernetworkOptions.plainValue(metadata["name"])
        let transform = HypernetworkTransform(name: Self.fileStem(source.path), storedName: storedName,
                                              options: options, pairs: pairs, file: source.path)
        return Adapter(path: source.path, methodIDs: [id], format: "a1111",
                       baseModel: Self.family(widths: Set(pairs.keys)), metadata: metadata,
                       modules: [], contextTransforms: [transform])
    }

    /// `(width, half, rest)` for `<width>.<0|1>.<rest>` with rest `linear.N.weight|bias` or
    /// `linear1|linear2.weight|bias`; nil otherwise.
    static func parse(_ key: String) -> (width: Int, half: Int, rest: String)? {
        let parts = key.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let width = Int(parts[0]), width > 0, parts[0].allSatisfy(\.isNumber),
              let half = Int(parts[1]), half == 0 || half == 1, parts[1].count == 1 else { return nil }
        let rest = String(parts[2])
        let pieces = rest.split(separator: ".", omittingEmptySubsequences: false)
        let isParameter = pieces.last == "weight" || pieces.last == "bias"
        if pieces.count == 3, pieces[0] == "linear", Int(pieces[1]) != nil, pieces[1].allSatisfy(\.isNumber), isParameter {
            return (width, half, rest)
        }
        if pieces.count == 2, pieces[0] == "linear1" || pieces[0] == "linear2", isParameter {
            return (width, half, rest)
        }
        return nil
    }

    /// The file's string metadata; for a PyTorch pickle (where the options live), its plain
    /// values rendered Python-style (`[1, 2, 1]`, `'relu'`, `True`, `None`).
    static func metadata(of source: TensorSource) -> [String: String] {
        var metadata = source.metadata
        if let pickle = source as? TorchFile {
            for key in pickle.valueKeys where metadata[key] == nil { metadata[key] = pickle.values[key]?.description }
        }
        return metadata
    }

    /// The file name without directory and extension (A1111's hypernetwork name).
    static func fileStem(_ path: String) -> String {
        let file = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
        guard let dot = file.lastIndex(of: "."), dot != file.startIndex else { return file }
        return String(file[..<dot])
    }

    /// The family whose text-context width is among `widths` (one only); nil otherwise.
    static func family(widths: Set<Int>) -> ModelFamily? {
        let families = ModelFamily.allCases.filter { widths.contains($0.contextWidth) }
        return families.count == 1 ? families[0] : nil
    }
}
