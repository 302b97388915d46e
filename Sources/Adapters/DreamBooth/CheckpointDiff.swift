import Foundation
import Host
import SafeTensors
import Tensor

/// Writes the difference between a fine-tuned checkpoint and its base as an adapter file
/// (`adapterhost diff --base A --tuned B --out D`), for ``DreamBoothMethod`` to load.
///
/// - Inputs: two single-file `.safetensors` checkpoints with the same keys, shapes and dtypes
///   (anything else is an error naming the key). They are only read (memory-mapped); the
///   output may be neither of them.
/// - Output: only the tensors that changed (bitwise comparison), keyed by the checkpoint's own
///   keys, each Δ = tuned − base computed as ``TensorDifference`` describes (stored in F32, or
///   in the checkpoint dtype when exact there), plus the metadata of ``DiffMetadata``: the base
///   file's SHA-256 (the adapter applies to that file only, unless forced), its family, the
///   file names.
/// - Changed tensors the host cannot patch (no adapter target: schedule buffers, EMA copies,
///   OpenCLIP's fused `in_proj`, SDXL's transposed `text_projection`) are left out and listed,
///   unless `includeUnmapped` (they are then reported as skipped when applied).
/// - Streaming: the tensors are compared and differenced one at a time in a first pass (to
///   choose each stored dtype), then again while writing; memory stays at a few tensors. The
///   file is written under a temporary name and renamed into place (`SafeTensorsWriter`).
public enum CheckpointDiff {
    /// How the difference is made.
    public struct Options: Sendable {
        /// `.auto`: each Δ in the checkpoint's dtype when exact there, else F32.
        public var storage: Storage = .auto
        /// Keep changed tensors the host has no target for.
        public var includeUnmapped = false
        public init(storage: Storage = .auto, includeUnmapped: Bool = false) {
            self.storage = storage
            self.includeUnmapped = includeUnmapped
        }
    }

    /// The stored dtype policy.
    public enum Storage: String, Sendable, CaseIterable {
        case auto, f32
    }

    /// What was written.
    public struct Summary: Sendable {
        /// SHA-256 of the base file, and its family.
        public let baseSHA256: String
        public let family: ModelFamily
        /// Tensors compared, and the changed ones written (model order) with their stored dtypes.
        public let comparedTensors: Int
        public let writtenKeys: [String]
        public let storedDTypes: [String: DType]
        /// Changed tensors left out: no adapter target in the host.
        public let omittedKeys: [String]
        /// Changed elements written, those whose difference was corrected to reproduce the
        /// tuned value, and those the merge at weight 1 cannot reproduce (with the largest error).
        public let changedElements: Int
        public let correctedElements: Int
        public let unreproducibleElements: Int
        public let maxUnreproducibleError: Double
    }

    /// Compares `base` and `tuned` and writes the difference to `out`.
    /// `progress(done, total)` is called after each tensor of each pass.
    @discardableResult
    public static func write(base: String, tuned: String, out: String, options: Options = Options(),
                             progress: ((Int, Int) -> Void)? = nil) throws -> Summary {
        try refuseOverwriting(out: out, inputs: [base, tuned])
        let model = try ModelWeights.load(path: base)
        let tunedFile = try SafeTensorsFile(path: tuned)
        let pairs = try matchedPairs(model: model, tuned: tunedFile)

        // Pass 1: what changed, whether the host can patch it, and the stored dtype.
        var planned: [(key: String, dtype: DType, shape: [Int])] = []
        var stored: [String: DType] = [:]
        var omitted: [String] = []
        var changedElements = 0, corrected = 0, unreproducible = 0
        var maxError = 0.0
        let index = model.targetIndex
        for (i, pair) in pairs.enumerated() {
            defer { progress?(i + 1, pairs.count * 2) }
            guard !bitwiseEqual(pair.base, pair.tuned) else { continue }
            guard pair.base.dtype.isFloatingPoint else {
                throw DreamBoothError(file: tuned, key: pair.key, rule: .nonFloatChanged(dtype: pair.base.dtype.rawValue))
            }
            if !options.includeUnmapped && !isPatchable(pair.key, index: index) {
                omitted.append(pair.key)
                continue
            }
            let difference = TensorDifference(base: pair.base, tuned: pair.tuned, storage: options.storage.tensorStorage)
            planned.append((pair.key, difference.storageDType, pair.base.shape))
            stored[pair.key] = difference.storageDType
            changedElements += pair.base.count
            corrected += difference.corrected
            unreproducible += difference.unreproducible
            maxError = max(maxError, difference.maxError)
        }
        guard !planned.isEmpty else {
            throw DreamBoothError(file: tuned, key: omitted.first ?? "", rule: .identical)
        }

        let hash = try model.fileSHA256()!
        var metadata: [String: String] = [
            DiffMetadata.method: "dreambooth",
            DiffMetadata.baseSHA256: hash,
            DiffMetadata.baseFamily: model.family.rawValue,
            DiffMetadata.baseFile: (base as NSString).lastPathComponent,
            DiffMetadata.tunedFile: (tuned as NSString).lastPathComponent,
            DiffMetadata.unreproducibleElements: String(unreproducible),
        ]
        if !omitted.isEmpty { metadata[DiffMetadata.omittedTensors] = String(omitted.count) }

        // Pass 2: the same differences again, one tensor at a time, as the writer reaches them.
        var writer = SafeTensorsWriter(metadata: metadata)
        writer.inputPaths = [base, tuned]
        let byKey = Dictionary(pairs.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var written = 0
        for entry in planned {
            let pair = byKey[entry.key]!
            writer.add(entry.key, dtype: entry.dtype, shape: entry.shape) { sink in
                let difference = TensorDifference(base: pair.base, tuned: pair.tuned, storage: options.storage.tensorStorage)
                // Same inputs, same arithmetic: pass 1 chose this dtype for exactly this Δ.
                precondition(difference.storageDType == entry.dtype, "difference of \(entry.key) changed between passes")
                try difference.delta.to(entry.dtype).withUnsafeBytes { try sink($0) }
                written += 1
                progress?(pairs.count + written, pairs.count * 2)
            }
        }
        try writer.write(to: out)
        return Summary(baseSHA256: hash, family: model.family, comparedTensors: pairs.count,
                       writtenKeys: planned.map(\.key), storedDTypes: stored, omittedKeys: omitted,
                       changedElements: changedElements, correctedElements: corrected,
                       unreproducibleElements: unreproducible, maxUnreproducibleError: maxError)
    }

    /// True when a merge can change `key`: a weight some adapter name resolves to as a whole
    /// tensor, or the bias of such a layer.
    static func isPatchable(_ key: String, index: TargetIndex) -> Bool {
        if key.hasSuffix(".weight"), let t = index.resolve(String(key.dropLast(".weight".count))) {
            return t.weightKey == key && t.rows == nil
        }
        if key.hasSuffix(".bias"), let t = index.resolve(String(key.dropLast(".bias".count))) {
            return t.biasKey == key && t.rows == nil
        }
        return false
    }

    /// The two checkpoints' tensors by key, in the base's order; same keys, shapes and dtypes.
    static func matchedPairs(model: ModelWeights, tuned: SafeTensorsFile) throws -> [(key: String, base: Tensor, tuned: Tensor)] {
        let tunedKeys = Set(tuned.names)
        let baseKeys = Set(model.keys)
        if let missing = model.keys.first(where: { !tunedKeys.contains($0) }) {
            throw DreamBoothError(file: tuned.path, key: missing, rule: .onlyInOne(presentIn: model.path, missingFrom: tuned.path))
        }
        if let extra = tuned.names.first(where: { !baseKeys.contains($0) }) {
            throw DreamBoothError(file: tuned.path, key: extra, rule: .onlyInOne(presentIn: tuned.path, missingFrom: model.path))
        }
        return try model.keys.map { key in
            let a = model.tensor(key)!
            let b = try tuned.tensor(named: key)
            guard a.dtype == b.dtype else {
                throw DreamBoothError(file: tuned.path, key: key, rule: .dtypeMismatch(base: a.dtype.rawValue, tuned: b.dtype.rawValue))
            }
            guard a.shape == b.shape else {
                throw DreamBoothError(file: tuned.path, key: key, rule: .shapeMismatch(base: a.shape, tuned: b.shape))
            }
            return (key, a, b)
        }
    }

    /// Bitwise equality of two tensors of one dtype and shape.
    static func bitwiseEqual(_ a: Tensor, _ b: Tensor) -> Bool {
        let x = a.contiguous(), y = b.contiguous()
        guard x.byteCount > 0 else { return true }
        return x.withUnsafeBytes { xp in y.withUnsafeBytes { yp in memcmp(xp.baseAddress!, yp.baseAddress!, xp.count) == 0 } }
    }

    /// Refuses an output path that is (or resolves to) one of the inputs. The writer checks
    /// the same by device and inode; this gives the clearer message first.
    static func refuseOverwriting(out: String, inputs: [String]) throws {
        let target = URL(fileURLWithPath: out).resolvingSymlinksInPath().standardizedFileURL.path
        let targetID = MappedFile.identity(ofPath: out)
        for input in inputs {
            let resolved = URL(fileURLWithPath: input).resolvingSymlinksInPath().standardizedFileURL.path
            let sameFile = targetID != nil && MappedFile.identity(ofPath: input).map { $0 == targetID! } == true
            if resolved == target || sameFile {
                throw DreamBoothError(file: out, key: "", rule: .outputIsInput(input: input))
            }
        }
    }
}

extension CheckpointDiff.Storage {
    var tensorStorage: TensorDifference.Storage { self == .auto ? .auto : .f32 }
}
