import Tensor

/// The safetensors file format (https://github.com/huggingface/safetensors):
///
///     [8 bytes: N, u64 little-endian][N bytes: UTF-8 JSON header][data section]
///
/// The header is a JSON object mapping each tensor name to
/// `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}` (offsets relative to the
/// data section), plus an optional `"__metadata__"` object of string → string.
///
/// - Reading: ``SafeTensorsFile`` (memory-mapped, header-only open, zero-copy tensor views).
/// - Writing: ``SafeTensorsWriter`` (streaming, atomic rename, byte-identical to the Python
///   library's output for the same input).
/// - Errors: ``SafeTensorsError`` names the file, the tensor and the broken rule.
public enum SafeTensorsFormat {
    /// Size of the header-length prefix.
    public static let lengthPrefixSize = 8
    /// The largest header the reference implementation accepts (`MAX_HEADER_SIZE`).
    public static let maxHeaderLength = 100_000_000
    /// The reserved key for the free-form string → string metadata.
    public static let metadataKey = "__metadata__"
    /// Writers pad the header with spaces to a multiple of this many bytes.
    public static let headerAlignment = 8

    /// Dtype names the reference implementation (huggingface/safetensors, `Dtype` enum) knows
    /// but `Tensor` cannot hold. Files using them are rejected with
    /// ``SafeTensorsError/Rule/unsupportedDType(_:)`` rather than as unknown.
    public static let knownButUnsupportedDTypes: Set<String> = [
        "U16", "U32", "U64", "C64", "F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    ]

    /// Rank of a dtype in the reference implementation's `Dtype` enum (declaration order).
    /// Its writer orders tensors by this rank, descending, then by name; we do the same so
    /// our files are byte-identical. The order is
    /// BOOL < F4 < F6_E2M3 < F6_E3M2 < U8 < I8 < F8_E5M2 < F8_E4M3 < F8_E8M0 < F8_E4M3FNUZ
    /// < F8_E5M2FNUZ < I16 < U16 < F16 < BF16 < I32 < U32 < F32 < C64 < F64 < I64 < U64.
    static func referenceRank(_ dtype: DType) -> Int {
        switch dtype {
        case .bool: return 0
        case .u8: return 4
        case .i8: return 5
        case .f8e5m2: return 6
        case .f8e4m3: return 7
        case .i16: return 11
        case .f16: return 13
        case .bf16: return 14
        case .i32: return 15
        case .f32: return 17
        case .f64: return 19
        case .i64: return 20
        }
    }
}
