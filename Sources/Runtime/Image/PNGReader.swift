import CPNG
import Foundation

/// A decoded PNG: its pixels as 8-bit RGB and its uncompressed text chunks.
public struct PNGFile {
    public var image: RGBImage
    /// `tEXt` and uncompressed `iTXt` chunks, (keyword, text) in file order.
    public var text: [(key: String, value: String)]
    /// Keywords of compressed text chunks (`zTXt`, compressed `iTXt`), which are not decoded.
    public var compressedTextKeys: [String]
    /// Chunk types in file order (for checking layouts).
    public var chunkTypes: [String]

    /// The text of the first chunk with keyword `key`.
    public func text(for key: String) -> String? { text.first { $0.key == key }?.value }
}

/// Reads PNG files: pixels through libpng's simplified API (any PNG, converted to 8-bit RGB;
/// errors come back as values, no `longjmp`), text chunks by walking the chunk list here
/// (CRC-checked).
public enum PNGReader {
    public static func read(path: String) throws -> PNGFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PNGError.readFailed(path: path, reason: "cannot read the file")
        }
        return try decode([UInt8](data), name: path)
    }

    public static func decode(_ bytes: [UInt8], name: String = "<memory>") throws -> PNGFile {
        let (text, compressed, types) = try chunks(bytes, name: name)
        var control = png_image()
        control.version = UInt32(PNG_IMAGE_VERSION)
        let begun = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&control, $0.baseAddress, $0.count) }
        guard begun != 0 else {
            throw PNGError.readFailed(path: name, reason: message(of: control))
        }
        control.format = UInt32(PNG_FORMAT_FLAG_COLOR)   // PNG_FORMAT_RGB: 8-bit R, G, B
        let (width, height) = (Int(control.width), Int(control.height))
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let finished = pixels.withUnsafeMutableBytes { png_image_finish_read(&control, nil, $0.baseAddress, 0, nil) }
        guard finished != 0 else {
            png_image_free(&control)
            throw PNGError.readFailed(path: name, reason: message(of: control))
        }
        return PNGFile(image: RGBImage(width: width, height: height, pixels: pixels), text: text,
                       compressedTextKeys: compressed, chunkTypes: types)
    }

    private static func message(of control: png_image) -> String {
        withUnsafeBytes(of: control.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Walks the chunk list: text chunks decoded, compressed ones' keywords, every type.
    static func chunks(_ bytes: [UInt8], name: String) throws -> (text: [(key: String, value: String)], compressed: [String], types: [String]) {
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else {
            throw PNGError.readFailed(path: name, reason: "no PNG signature")
        }
        var text: [(key: String, value: String)] = []
        var compressed: [String] = []
        var types: [String] = []
        var offset = 8
        func fail(_ reason: String) -> PNGError { .readFailed(path: name, reason: "chunk at byte \(offset): \(reason)") }
        while offset < bytes.count {
            guard offset + 12 <= bytes.count else { throw fail("truncated chunk header") }
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard length <= bytes.count - offset - 12 else { throw fail("length \(length) runs past the end") }
            let typeBytes = Array(bytes[(offset + 4)..<(offset + 8)])
            let type = String(decoding: typeBytes, as: UTF8.self)
            let body = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            let crcOffset = offset + 8 + length
            let stored = UInt32(bytes[crcOffset]) << 24 | UInt32(bytes[crcOffset + 1]) << 16
                | UInt32(bytes[crcOffset + 2]) << 8 | UInt32(bytes[crcOffset + 3])
            guard CRC32.checksum(typeBytes + body) == stored else { throw fail("\(type) CRC mismatch") }
            types.append(type)
            switch type {
            case "tEXt":
                guard let zero = body.firstIndex(of: 0) else { throw fail("tEXt without a keyword terminator") }
                text.append((latin1(body[..<zero]), latin1(body[(zero + 1)...])))
            case "zTXt":
                if let zero = body.firstIndex(of: 0) { compressed.append(latin1(body[..<zero])) }
            case "iTXt":
                guard let zero = body.firstIndex(of: 0), zero + 2 < body.count else { throw fail("malformed iTXt") }
                let key = latin1(body[..<zero])
                if body[zero + 1] != 0 {
                    compressed.append(key)
                } else {
                    var position = zero + 3
                    for _ in 0..<2 {   // language tag, translated keyword
                        guard let end = body[position...].firstIndex(of: 0) else { throw fail("malformed iTXt") }
                        position = end + 1
                    }
                    text.append((key, String(decoding: body[position...], as: UTF8.self)))
                }
            default:
                break
            }
            offset = crcOffset + 4
            if type == "IEND" { break }
        }
        return (text, compressed, types)
    }

    private static func latin1(_ bytes: ArraySlice<UInt8>) -> String {
        var text = ""
        text.unicodeScalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
        return text
    }
}

/// The CRC-32 of PNG (and zlib): polynomial 0xEDB88320, reflected.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
