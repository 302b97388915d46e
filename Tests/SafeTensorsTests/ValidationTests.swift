import Foundation
import Testing
import Tensor
@testable import SafeTensors

/// One malformed (or, with `expect: nil`, valid) file and the error it must produce.
struct ValidationCase: Sendable, CustomTestStringConvertible {
    enum Expectation: Sendable {
        /// Exactly this rule, on this tensor (nil: none).
        case rule(SafeTensorsError.Rule, tensor: String?)
        /// `.invalidJSON` whose reason contains this text.
        case json(String)
    }
    let label: String
    let bytes: [UInt8]
    let expect: Expectation
    var testDescription: String { label }
}

private let f32x1 = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
private let four: [UInt8] = [0, 0, 128, 63]  // 1.0f

private func c(_ label: String, _ header: String, data: [UInt8] = [], length: UInt64? = nil,
               _ rule: SafeTensorsError.Rule, tensor: String? = nil) -> ValidationCase {
    ValidationCase(label: label, bytes: rawFile(header: header, data: data, length: length), expect: .rule(rule, tensor: tensor))
}

private func j(_ label: String, _ header: String, data: [UInt8] = [], _ reason: String) -> ValidationCase {
    ValidationCase(label: label, bytes: rawFile(header: header, data: data), expect: .json(reason))
}

/// Every rule of the format, with at least one file that breaks only it.
let validationCases: [ValidationCase] = [
    // Length prefix
    ValidationCase(label: "empty file", bytes: [], expect: .rule(.fileTooSmall(size: 0), tensor: nil)),
    ValidationCase(label: "5-byte file", bytes: [1, 2, 3, 4, 5], expect: .rule(.fileTooSmall(size: 5), tensor: nil)),
    c("header length over the limit", "{}", length: 100_000_001, .headerTooLarge(length: 100_000_001)),
    c("header length u64 max", "{}", length: .max, .headerTooLarge(length: .max)),
    c("header past end of file", "{}", length: 100, .headerBeyondFile(length: 100, fileSize: 10)),
    c("header at the limit but past end", "{}", length: 100_000_000, .headerBeyondFile(length: 100_000_000, fileSize: 10)),
    // UTF-8
    ValidationCase(label: "invalid UTF-8 byte", bytes: rawFile(header: Array(#"{"a"#.utf8) + [0xFF] + Array(#"":1}"#.utf8)),
                   expect: .rule(.headerNotUTF8(offset: 3), tensor: nil)),
    ValidationCase(label: "overlong UTF-8", bytes: rawFile(header: [0x7B, 0x22, 0xC0, 0xAF, 0x22, 0x7D]),
                   expect: .rule(.headerNotUTF8(offset: 2), tensor: nil)),
    ValidationCase(label: "UTF-8 encoded surrogate", bytes: rawFile(header: [0x7B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x7D]),
                   expect: .rule(.headerNotUTF8(offset: 2), tensor: nil)),
    ValidationCase(label: "truncated UTF-8 sequence", bytes: rawFile(header: [0x7B, 0x22, 0xE6, 0x97]),
                   expect: .rule(.headerNotUTF8(offset: 2), tensor: nil)),
    // JSON syntax
    c("empty header", "", .headerNotObject),
    c("array header", "[1, 2]", .headerNotObject),
    c("string header", #""x""#, .headerNotObject),
    j("trailing comma", #"{"a":\#(f32x1),}"#, data: four, "expected a string key"),
    j("missing colon", #"{"a" \#(f32x1)}"#, data: four, "expected ':'"),
    j("trailing garbage", #"{"a":\#(f32x1)} x"#, data: four, "unexpected characters after the header object"),
    j("two objects", #"{}{}"#, "unexpected characters after the header object"),
    j("unterminated string", #"{"a"#, "unterminated string"),
    j("unterminated object", #"{"a":\#(f32x1)"#, "unexpected end of header"),
    j("bad escape", #"{"\q":\#(f32x1)}"#, data: four, "invalid escape"),
    j("lone high surrogate", #"{"\ud800":\#(f32x1)}"#, data: four, "unpaired surrogate"),
    j("lone low surrogate", #"{"\udc00":\#(f32x1)}"#, data: four, "unpaired surrogate"),
    j("short unicode escape", #"{"\u12":\#(f32x1)}"#, data: four, "invalid \\u escape"),
    j("raw control character", "{\"a\u{1}b\":\(f32x1)}", data: four, "unescaped control character"),
    j("leading zero", #"{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#, data: four, "expected ',' or ']'"),
    j("bare minus", #"{"a":{"dtype":"F32","shape":[-],"data_offsets":[0,4]}}"#, data: four, "invalid number"),
    j("dangling fraction", #"{"a":{"dtype":"F32","shape":[1.],"data_offsets":[0,4]}}"#, data: four, "invalid number"),
    j("single quotes", #"{'a':\#(f32x1)}"#, data: four, "expected a string key"),
    // Keys
    c("duplicate tensor", #"{"a":\#(f32x1),"a":\#(f32x1)}"#, data: four, .duplicateKey("a")),
    c("duplicate __metadata__", #"{"__metadata__":{},"__metadata__":{}}"#, .duplicateKey("__metadata__")),
    c("canonically equal names", "{\"\u{E9}\":\(f32x1),\"e\u{301}\":\(f32x1)}", data: four, .duplicateKey("e\u{301}")),
    // Metadata
    c("metadata null", #"{"__metadata__":null}"#, .metadataNotObject),
    c("metadata string", #"{"__metadata__":"x"}"#, .metadataNotObject),
    c("metadata number value", #"{"__metadata__":{"k":1}}"#, .metadataValueNotString(key: "k")),
    c("metadata null value", #"{"__metadata__":{"k":null}}"#, .metadataValueNotString(key: "k")),
    c("metadata nested object", #"{"__metadata__":{"k":{"x":"y"}}}"#, .metadataValueNotString(key: "k")),
    c("metadata duplicate key", #"{"__metadata__":{"k":"a","k":"b"}}"#, .duplicateMetadataKey("k")),
    // Entries
    c("entry is an array", #"{"a":[0,4]}"#, data: four, .entryNotObject, tensor: "a"),
    c("entry is a string", #"{"a":"F32"}"#, data: four, .entryNotObject, tensor: "a"),
    c("missing dtype", #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, data: four, .missingField("dtype"), tensor: "a"),
    c("missing shape", #"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, data: four, .missingField("shape"), tensor: "a"),
    c("missing data_offsets", #"{"a":{"dtype":"F32","shape":[1]}}"#, data: four, .missingField("data_offsets"), tensor: "a"),
    c("empty entry", #"{"a":{}}"#, .missingField("dtype"), tensor: "a"),
    c("unexpected field", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#, data: four,
      .unexpectedField("extra"), tensor: "a"),
    c("duplicate field", #"{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: four,
      .duplicateField("dtype"), tensor: "a"),
    c("dtype not a string", #"{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}"#, data: four, .dtypeNotString, tensor: "a"),
    c("unknown dtype", #"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, data: four, .unknownDType("F33"), tensor: "a"),
    c("lowercase dtype", #"{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#, data: four, .unknownDType("f32"), tensor: "a"),
    c("unsupported U16", #"{"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}"#, data: four, .unsupportedDType("U16"), tensor: "a"),
    c("unsupported C64", #"{"a":{"dtype":"C64","shape":[],"data_offsets":[0,8]}}"#, data: four + four, .unsupportedDType("C64"), tensor: "a"),
    c("negative dimension", #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "entry 0 is negative"), tensor: "a"),
    c("fractional dimension", #"{"a":{"dtype":"F32","shape":[1,1.0],"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "entry 1 is not an integer"), tensor: "a"),
    c("exponent dimension", #"{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "entry 0 is not an integer"), tensor: "a"),
    c("string dimension", #"{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "entry 0 is not a number"), tensor: "a"),
    c("shape not an array", #"{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "not an array"), tensor: "a"),
    c("huge dimension", #"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#, data: four,
      .invalidShape(reason: "entry 0 is too large"), tensor: "a"),
    c("one offset", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}"#, data: four,
      .invalidDataOffsets(reason: "expected 2 integers, found 1"), tensor: "a"),
    c("three offsets", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}"#, data: four,
      .invalidDataOffsets(reason: "expected 2 integers, found 3"), tensor: "a"),
    c("negative offset", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, data: four,
      .invalidDataOffsets(reason: "entry 0 is negative"), tensor: "a"),
    c("offsets not an array", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":{"b":0}}}"#, data: four,
      .invalidDataOffsets(reason: "not an array"), tensor: "a"),
    c("reversed offsets", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: four,
      .offsetsReversed(begin: 4, end: 0), tensor: "a"),
    c("byte size overflow", #"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, data: four,
      .byteSizeOverflow(shape: [4611686018427387904, 4], dtype: "F32"), tensor: "a"),
    c("element count overflow", #"{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, data: four,
      .byteSizeOverflow(shape: [4294967296, 4294967296], dtype: "U8"), tensor: "a"),
    c("size mismatch", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: four,
      .byteSizeMismatch(dtype: "F32", shape: [2], expected: 8, begin: 0, end: 4), tensor: "a"),
    c("zero-size with bytes", #"{"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,4]}}"#, data: four,
      .byteSizeMismatch(dtype: "F32", shape: [0, 3], expected: 0, begin: 0, end: 4), tensor: "a"),
    // Layout
    c("does not start at 0", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: four + four,
      .dataGap(expectedBegin: 0, begin: 4), tensor: "a"),
    c("hole between tensors",
      #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
      data: four + four + four, .dataGap(expectedBegin: 4, begin: 8), tensor: "b"),
    c("overlap",
      #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
      data: four + four, .dataOverlap(previousEnd: 8, begin: 4), tensor: "b"),
    c("same range twice",
      #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
      data: four, .dataOverlap(previousEnd: 4, begin: 0), tensor: "b"),
    c("zero-size inside another",
      #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#,
      data: four + four, .dataOverlap(previousEnd: 8, begin: 4), tensor: "b"),
    c("trailing bytes", #"{"a":\#(f32x1)}"#, data: four + [9, 9], .dataEndMismatch(dataEnd: 4, dataSectionSize: 6)),
    c("truncated data", #"{"a":\#(f32x1)}"#, data: [0, 0], .dataEndMismatch(dataEnd: 4, dataSectionSize: 2)),
    c("no tensors but data", "{}", data: [1], .dataEndMismatch(dataEnd: 0, dataSectionSize: 1)),
]

@Suite struct ValidationTests {
    @Test(arguments: validationCases)
    func malformedFileIsRejected(_ testCase: ValidationCase) throws {
        // Through the real file path (mmap) as the CLI sees it.
        let dir = try TemporaryDirectory()
        let path = try dir.write(testCase.bytes, name: "bad.safetensors")
        do {
            let file = try SafeTensorsFile(path: path)
            Issue.record("\(testCase.label): opened with \(file.tensorInfos.count) tensors")
        } catch {
            switch testCase.expect {
            case .rule(let rule, let tensor):
                #expect(error.rule == rule, "\(testCase.label)")
                #expect(error.tensor == tensor, "\(testCase.label)")
                if let tensor { #expect(error.description.contains("tensor \(quotedForMessage(tensor)): ")) }
            case .json(let reason):
                guard case .invalidJSON(_, let got) = error.rule else {
                    Issue.record("\(testCase.label): expected invalid JSON, got \(error.rule)")
                    return
                }
                #expect(got.contains(reason), "\(testCase.label): \(got)")
            }
            #expect(error.file == path)
            #expect(error.description.hasPrefix("\(path): "))
            #expect(!error.description.contains("\n") && !error.description.contains("\r"))
        }
    }

    @Test func messagesAreOneLineAndNameTheTensor() throws {
        let name = "evil\nname\u{1}\"x\""
        var header: [UInt8] = []
        HeaderEncoder.appendString(name, to: &header)
        let bytes = rawFile(header: Array("{".utf8) + header + Array(#":{"dtype":"F33","shape":[],"data_offsets":[0,4]}}"#.utf8),
                            data: four)
        do {
            _ = try validate(bytes, file: "dir/x.safetensors")
            Issue.record("expected an error")
        } catch {
            #expect(error.tensor == name)
            #expect(error.description == #"dir/x.safetensors: tensor "evil\nname\u0001\"x\"": unknown dtype "F33""#)
        }
    }

    @Test func exactDescriptions() {
        let e = SafeTensorsError(file: "m.safetensors", tensor: "w",
                                 rule: .byteSizeMismatch(dtype: "F32", shape: [2, 3], expected: 24, begin: 0, end: 20))
        #expect(e.description == "m.safetensors: tensor \"w\": dtype F32 and shape [2, 3] need 24 bytes but data_offsets [0, 20] span 20")
        #expect(SafeTensorsError(file: "f", rule: .headerTooLarge(length: 200_000_000)).description
                == "f: header length 200000000 exceeds the limit of 100000000 bytes")
    }

    @Test func missingFileAndDirectory() throws {
        let dir = try TemporaryDirectory()
        let missing = dir.file("nope.safetensors")
        #expect(throws: SafeTensorsError(file: missing, rule: .cannotOpen(reason: "No such file or directory"))) {
            try SafeTensorsFile(path: missing)
        }
        #expect(throws: SafeTensorsError(file: dir.path, rule: .cannotOpen(reason: "not a regular file"))) {
            try SafeTensorsFile(path: dir.path)
        }
    }

    // MARK: Valid edge cases

    @Test func emptyHeaderObjectIsValid() throws {
        let header = try validate(rawFile(header: "{}      "))
        #expect(header.tensors.isEmpty && header.metadata.isEmpty)
        #expect(try validate(rawFile(header: #"{"__metadata__":{}}"#)).metadata.isEmpty)
    }

    @Test func whitespaceEscapesAndHeaderOrder() throws {
        // Header order differs from data order; JSON whitespace everywhere; escaped names.
        let header = " \n{ \"b\\u00e9\" : {\"data_offsets\" : [ 4 , 8 ], \"shape\":[1],\t\"dtype\":\"F32\"},\r\n"
            + " \"\\ud83d\\ude00\\/\\\"\\\\\\b\\f\\n\\r\\t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
            + " \"__metadata__\": {\"k\": \"v\\u0000\", \"\": \"empty key\"} }  \n "
        let parsed = try validate(rawFile(header: header, data: four + [0, 0, 0, 64]))
        #expect(parsed.tensors.map(\.name) == ["b\u{E9}", "\u{1F600}/\"\\\u{8}\u{C}\n\r\t"])
        #expect(parsed.tensors[0].dataOffsets == 4..<8)
        #expect(parsed.metadata == ["k": "v\u{0}", "": "empty key"])
    }

    @Test func zeroSizeTensorsShareAnOffset() throws {
        let header = #"{"z1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":\#(f32x1),"z0":{"dtype":"I8","shape":[3,0],"data_offsets":[0,0]},"z2":{"dtype":"BOOL","shape":[0],"data_offsets":[4,4]}}"#
        let parsed = try validate(rawFile(header: header, data: four))
        #expect(parsed.tensors.map(\.name) == ["z1", "a", "z0", "z2"])
    }

    @Test func unicodeScalarsInNamesAreKept() throws {
        let parsed = try validate(rawFile(header: "{\"日本\":\(f32x1)}", data: four))
        #expect(parsed.tensors.first?.name == "日本")
    }
}
