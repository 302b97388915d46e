import Tensor

/// What the header says about one tensor: enough to plan a read without touching its data.
public struct TensorInfo: Hashable, Sendable {
    /// The tensor's name (its key in the header).
    public let name: String
    /// Element type.
    public let dtype: DType
    /// Size of each dimension (empty for a 0-rank scalar).
    public let shape: [Int]
    /// `data_offsets` as written in the header: relative to the start of the data section.
    public let dataOffsets: Range<Int>
    /// The same bytes as absolute offsets in the file.
    public let fileRange: Range<Int>

    /// Number of elements (1 for a scalar, 0 when a dimension is 0).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Size of the tensor's data in bytes.
    public var byteCount: Int { dataOffsets.count }
    /// True when the data's file offset is a multiple of the element size, so (with the
    /// page-aligned mapping) a zero-copy view has naturally aligned elements.
    public var isAligned: Bool { fileRange.lowerBound % dtype.byteSize == 0 }
}
