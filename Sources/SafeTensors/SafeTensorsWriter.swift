import Tensor

/// Builds a safetensors file from tensors and streamed sources, and writes it safely.
///
/// Output is byte-identical to the reference Python library's for the same tensors and at
/// most one metadata key (see ``HeaderEncoder`` for why more keys cannot be): tensors are
/// ordered by the reference's dtype rank, descending, then by name (UTF-8 bytes), and the
/// header is padded with spaces to a multiple of 8 bytes.
///
/// Writing streams: a tensor's bytes go from its source to the file in chunks, so the
/// writer never holds a copy of the file (mapped tensors are written straight from the
/// mapping; non-contiguous ones are packed a few MiB at a time).
///
/// Safety: the file is written under a temporary name in the destination's directory,
/// fsynced, then renamed into place. The writer refuses a destination that is mapped for
/// reading by a ``SafeTensorsFile`` in this process (same device and inode, also through
/// tensor views that outlive the file object) or that is one of ``inputPaths``. On any
/// error the temporary file is removed and the destination is untouched.
///
/// ```swift
/// var writer = SafeTensorsWriter(metadata: ["format": "pt"])
/// writer.add("a.weight", tensor: weight)
/// writer.add("b.bias", dtype: .f16, shape: [320]) { sink in
///     try chunks.forEach { chunk in try chunk.withUnsafeBytes { try sink($0) } }
/// }
/// try writer.write(to: "out.safetensors")
/// ```
public struct SafeTensorsWriter {
    /// Receives the next bytes of a tensor (row-major, little-endian), any chunk size.
    public typealias ByteSink = (UnsafeRawBufferPointer) throws -> Void
    /// Produces all bytes of one tensor by calling the sink, in order, as often as it likes.
    public typealias ByteSource = (ByteSink) throws -> Void

    /// The `__metadata__` to write (omitted from the header when empty, as the reference
    /// omits `metadata=None`).
    public var metadata: [String: String]
    /// Files the sources read from; the writer refuses to replace any of them.
    public var inputPaths: [String] = []

    private enum Source {
        case tensor(Tensor)
        case stream(ByteSource)
    }

    private struct Pending {
        let name: String
        let dtype: DType
        let shape: [Int]
        let source: Source
    }

    private var pending: [Pending] = []

    /// An empty writer.
    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Names added so far, in the order they were added.
    public var names: [String] { pending.map(\.name) }

    /// Adds a tensor; its dtype and shape are written as they are, its elements row-major
    /// (a non-contiguous view is packed while writing). The tensor is only read by `write`.
    public mutating func add(_ name: String, tensor: Tensor) {
        pending.append(Pending(name: name, dtype: tensor.dtype, shape: tensor.shape, source: .tensor(tensor)))
    }

    /// Adds a tensor whose bytes `source` produces when the file is written. It must
    /// produce exactly (element count × element size) bytes, or writing fails.
    public mutating func add(_ name: String, dtype: DType, shape: [Int], source: @escaping ByteSource) {
        pending.append(Pending(name: name, dtype: dtype, shape: shape, source: .stream(source)))
    }

    /// Writes everything added to `path` (see the type's documentation for the guarantees).
    ///
    /// Throws ``SafeTensorsError`` for every rule it checks; an error thrown by a source
    /// is rethrown as is. In both cases the destination is untouched.
    public func write(to path: String) throws {
        let entries = try plan(destination: path)
        try refuseInputs(destination: path)
        var header = HeaderEncoder.encode(metadata: metadata, entries: entries.map(\.header))
        // Neither our reader nor the reference would open a file with a larger header.
        guard header.count <= SafeTensorsFormat.maxHeaderLength else {
            throw SafeTensorsError(file: path, rule: .headerTooLarge(length: UInt64(header.count)))
        }
        let output = try AtomicFileOutput(destination: path)
        do {
            var prefix = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &prefix) { try output.write($0) }
            try header.withUnsafeBytes { try output.write($0) }
            header = []
            for entry in entries {
                try stream(entry, into: output, destination: path)
            }
            // Checked again: a reader may have opened the destination while we wrote.
            try refuseInputs(destination: path)
            try output.commit()
        } catch {
            output.discard()
            throw error
        }
    }

    /// Convenience: writes `tensors` (any order; the file order is the reference's).
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:],
                             to path: String) throws {
        var writer = SafeTensorsWriter(metadata: metadata)
        for (name, tensor) in tensors { writer.add(name, tensor: tensor) }
        try writer.write(to: path)
    }

    // MARK: - Planning

    private struct Planned {
        let pending: Pending
        let byteCount: Int
        let header: HeaderEncoder.Entry
    }

    /// Validates names and shapes, orders the tensors like the reference and assigns offsets.
    private func plan(destination: String) throws(SafeTensorsError) -> [Planned] {
        var seen = Set<String>()
        var sized: [(Pending, Int)] = []
        for p in pending {
            func fail(_ rule: SafeTensorsError.Rule) -> SafeTensorsError {
                SafeTensorsError(file: destination, tensor: p.name, rule: rule)
            }
            guard p.name != SafeTensorsFormat.metadataKey else { throw fail(.reservedTensorName) }
            guard seen.insert(p.name).inserted else { throw fail(.duplicateTensorName) }
            guard let bytes = Self.byteCount(dtype: p.dtype, shape: p.shape) else {
                throw fail(.invalidTensorShape(shape: p.shape))
            }
            sized.append((p, bytes))
        }
        sized.sort { a, b in
            let ra = SafeTensorsFormat.referenceRank(a.0.dtype), rb = SafeTensorsFormat.referenceRank(b.0.dtype)
            return ra != rb ? ra > rb : utf8Precedes(a.0.name, b.0.name)
        }
        var offset = 0
        var planned: [Planned] = []
        for (p, bytes) in sized {
            let (end, overflow) = offset.addingReportingOverflow(bytes)
            guard !overflow else {
                throw SafeTensorsError(file: destination, tensor: p.name, rule: .invalidTensorShape(shape: p.shape))
            }
            planned.append(Planned(pending: p, byteCount: bytes,
                                   header: .init(name: p.name, dtype: p.dtype, shape: p.shape, offsets: (offset, end))))
            offset = end
        }
        return planned
    }

    /// dtype size × element count, or nil for a negative dimension or overflow.
    static func byteCount(dtype: DType, shape: [Int]) -> Int? {
        var total = dtype.byteSize
        for d in shape {
            guard d >= 0 else { return nil }
            let (product, overflow) = total.multipliedReportingOverflow(by: d)
            guard !overflow else { return nil }
            total = product
        }
        return total
    }

    private func refuseInputs(destination: String) throws(SafeTensorsError) {
        guard let target = FileIdentity(path: destination) else { return }  // does not exist yet
        if OpenFileRegistry.isOpen(target) {
            throw SafeTensorsError(file: destination, rule: .outputOpenForReading)
        }
        for input in inputPaths where FileIdentity(path: input) == target {
            throw SafeTensorsError(file: destination, rule: .outputIsInput(input: input))
        }
    }

    // MARK: - Streaming

    /// Bytes packed per step when writing a non-contiguous tensor.
    static let packChunkBytes = 4 << 20

    private func stream(_ entry: Planned, into output: AtomicFileOutput, destination: String) throws {
        let expected = entry.byteCount
        let name = entry.pending.name
        var produced = 0
        // An output error raised inside the sink is remembered, so a source that swallows
        // errors thrown by the sink still cannot make us commit a broken file.
        var sinkError: SafeTensorsError?
        let sink: ByteSink = { bytes in
            if let sinkError { throw sinkError }
            produced += bytes.count
            guard produced <= expected else {
                let e = SafeTensorsError(file: destination, tensor: name,
                                         rule: .sourceSizeMismatch(expected: expected, produced: produced))
                sinkError = e
                throw e
            }
            do {
                try output.write(bytes)
            } catch let error as SafeTensorsError {
                sinkError = error
                throw error
            }
        }
        switch entry.pending.source {
        case .tensor(let tensor):
            try Self.streamElements(of: tensor, into: sink)
        case .stream(let source):
            try source(sink)
        }
        if let sinkError { throw sinkError }
        guard produced == expected else {
            throw SafeTensorsError(file: destination, tensor: name,
                                   rule: .sourceSizeMismatch(expected: expected, produced: produced))
        }
    }

    /// A tensor's elements, row-major: contiguous ones in one chunk straight from their
    /// storage; others packed a few MiB at a time (rows of the first axis, recursing into a
    /// row when one row alone is larger than that).
    static func streamElements(of tensor: Tensor, chunkBytes: Int = packChunkBytes, into sink: ByteSink) throws {
        if tensor.count == 0 { return }
        if tensor.isContiguous {
            try tensor.withUnsafeBytes { try sink($0) }
            return
        }
        // Not contiguous implies rank >= 1 and, with count > 0, shape[0] > 0.
        let rows = tensor.shape[0]
        let rowBytes = tensor.byteCount / rows
        if rowBytes >= chunkBytes && tensor.rank > 1 {
            for i in 0..<rows {
                try streamElements(of: tensor.sliced(axis: 0, i..<(i + 1)).squeezed(0), chunkBytes: chunkBytes, into: sink)
            }
            return
        }
        let rowsPerChunk = max(1, chunkBytes / max(rowBytes, 1))
        var start = 0
        while start < rows {
            let end = min(rows, start + rowsPerChunk)
            let packed = tensor.sliced(axis: 0, start..<end).contiguous()
            try packed.withUnsafeBytes { try sink($0) }
            start = end
        }
    }
}
