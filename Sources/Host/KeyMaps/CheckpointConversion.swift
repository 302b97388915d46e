import Tensor

/// A model's tensors could not be converted to the other naming.
public struct CheckpointConversionError: Error, CustomStringConvertible, Equatable {
    /// The model's path.
    public let path: String
    /// The source key that could not be converted.
    public let key: String
    /// The broken rule, in words.
    public let rule: String
    public var description: String { "\(path): cannot convert '\(key)': \(rule)" }
}

/// Tensor-level conversion between single-file and diffusers checkpoints: the key map of
/// ``CheckpointKeyMap`` plus the tensor transforms it names (OpenCLIP fused q/k/v rows split
/// or concatenated, VAE attention 1×1 conv ↔ linear reshape, `text_projection` transpose).
/// Values are never changed: every output tensor holds the same bits as its source (views
/// where possible, otherwise copies in the source dtype).
public enum CheckpointConversion {
    /// The result of a conversion: the converted model and the source keys that have no
    /// counterpart in the other naming (schedule buffers, `logit_scale`, SD2's
    /// `text_projection`, …), which are dropped.
    public struct Result {
        /// The model in the requested naming (same path and family).
        public let model: ModelWeights
        /// Source keys without a counterpart, in source order.
        public let droppedKeys: [String]
    }

    /// Converts `model` to `naming` (returns the same tensors when it already is).
    public static func convert(_ model: ModelWeights, to naming: ModelNaming) throws -> Result {
        if model.naming == naming { return Result(model: model, droppedKeys: []) }
        let layout = ModelLayout(keys: model.keys, naming: model.naming, family: model.family)
        let map = CheckpointKeyMap(family: model.family, layout: layout)
        switch naming {
        case .diffusers: return try toDiffusers(model, map: map)
        case .singleFile: return try toSingleFile(model, map: map)
        }
    }

    private static func toDiffusers(_ model: ModelWeights, map: CheckpointKeyMap) throws -> Result {
        var keys: [String] = [], tensors: [String: Tensor] = [:], dropped: [String] = []
        for key in model.keys {
            guard let tensor = model.tensor(key) else { continue }
            let conversions = map.diffusersKeys(forSingleFile: key)
            if conversions.isEmpty { dropped.append(key); continue }
            for conversion in conversions {
                guard tensors[conversion.key] == nil else {
                    throw CheckpointConversionError(path: model.path, key: key,
                                                    rule: "two keys become \(conversion.key)")
                }
                keys.append(conversion.key)
                tensors[conversion.key] = try toDiffusers(tensor, conversion.transform, path: model.path, key: key)
            }
        }
        return Result(model: ModelWeights(path: model.path, keys: keys, tensors: tensors, naming: .diffusers,
                                          family: model.family),
                      droppedKeys: dropped)
    }

    private static func toSingleFile(_ model: ModelWeights, map: CheckpointKeyMap) throws -> Result {
        var keys: [String] = [], tensors: [String: Tensor] = [:], dropped: [String] = []
        // Fused tensors are assembled once all their row blocks are seen.
        var fusedParts: [String: [Int: Tensor]] = [:], fusedCount: [String: Int] = [:]
        for key in model.keys {
            guard let tensor = model.tensor(key) else { continue }
            guard let conversion = map.singleFileConversion(forDiffusers: key) else { dropped.append(key); continue }
            if case let .fusedRows(index, count) = conversion.transform {
                if fusedParts[conversion.key] == nil { keys.append(conversion.key) }
                fusedParts[conversion.key, default: [:]][index] = tensor
                fusedCount[conversion.key] = count
                continue
            }
            guard tensors[conversion.key] == nil else {
                throw CheckpointConversionError(path: model.path, key: key, rule: "two keys become \(conversion.key)")
            }
            keys.append(conversion.key)
            tensors[conversion.key] = try toSingleFile(tensor, conversion.transform, path: model.path, key: key)
        }
        for (key, parts) in fusedParts {
            let count = fusedCount[key]!
            guard parts.count == count else {
                throw CheckpointConversionError(path: model.path, key: key,
                                                rule: "fused tensor needs all \(count) row blocks, found \(parts.keys.sorted())")
            }
            tensors[key] = try fuseRows((0..<count).map { parts[$0]! }, path: model.path, key: key)
        }
        return Result(model: ModelWeights(path: model.path, keys: keys, tensors: tensors, naming: .singleFile,
                                          family: model.family),
                      droppedKeys: dropped)
    }

    // MARK: Tensor transforms

    /// The diffusers tensor a single-file tensor gives under `transform` (a view for row
    /// blocks and reshapes of contiguous tensors).
    public static func toDiffusers(_ tensor: Tensor, _ transform: KeyTransform, path: String = "<memory>",
                                   key: String = "") throws -> Tensor {
        switch transform {
        case .identity:
            return tensor
        case let .fusedRows(index, count):
            return try splitRows(tensor, count: count, path: path, key: key)[index]
        case .conv1x1:
            guard tensor.rank == 4, tensor.shape[2] == 1, tensor.shape[3] == 1 else {
                // Some VAEs are already stored with linear attention weights.
                guard tensor.rank == 2 else {
                    throw CheckpointConversionError(path: path, key: key,
                                                    rule: "expected a 1×1 convolution weight, got shape \(tensor.shape)")
                }
                return tensor
            }
            return tensor.reshaped([tensor.shape[0], tensor.shape[1]])
        case .transpose:
            guard tensor.rank == 2 else {
                throw CheckpointConversionError(path: path, key: key, rule: "transpose needs a matrix, got \(tensor.shape)")
            }
            return tensor.transposed(0, 1).contiguous()
        }
    }

    /// The single-file tensor a diffusers tensor gives under `transform` (`fusedRows` needs
    /// all row blocks: use ``fuseRows(_:path:key:)``).
    public static func toSingleFile(_ tensor: Tensor, _ transform: KeyTransform, path: String = "<memory>",
                                    key: String = "") throws -> Tensor {
        switch transform {
        case .identity:
            return tensor
        case .fusedRows:
            throw CheckpointConversionError(path: path, key: key, rule: "a row block alone cannot make the fused tensor")
        case .conv1x1:
            guard tensor.rank == 2 else {
                throw CheckpointConversionError(path: path, key: key, rule: "expected a linear weight, got \(tensor.shape)")
            }
            return tensor.reshaped([tensor.shape[0], tensor.shape[1], 1, 1])
        case .transpose:
            guard tensor.rank == 2 else {
                throw CheckpointConversionError(path: path, key: key, rule: "transpose needs a matrix, got \(tensor.shape)")
            }
            return tensor.transposed(0, 1).contiguous()
        }
    }

    /// OpenCLIP's fused attention projection split into `count` equal row blocks (q, k, v):
    /// zero-copy views.
    public static func splitRows(_ fused: Tensor, count: Int = 3, path: String = "<memory>",
                                 key: String = "") throws -> [Tensor] {
        guard fused.rank >= 1, count > 0, fused.shape[0] % count == 0 else {
            throw CheckpointConversionError(path: path, key: key,
                                            rule: "\(fused.shape) does not split into \(count) equal row blocks")
        }
        let rows = fused.shape[0] / count
        return (0..<count).map { fused.sliced(axis: 0, $0 * rows..<($0 + 1) * rows) }
    }

    /// q, k, v (in that order) stacked by rows into OpenCLIP's fused tensor (same dtype, copied).
    public static func fuseRows(_ parts: [Tensor], path: String = "<memory>", key: String = "") throws -> Tensor {
        guard let first = parts.first,
              parts.allSatisfy({ $0.shape == first.shape && $0.dtype == first.dtype }) else {
            throw CheckpointConversionError(path: path, key: key,
                                            rule: "row blocks must share shape and dtype: \(parts.map { "\($0.dtype)\($0.shape)" })")
        }
        return Tensor.concat(parts, axis: 0)
    }
}
