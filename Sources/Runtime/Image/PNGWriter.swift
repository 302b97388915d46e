import CPNG
import Foundation

/// Errors writing or reading PNG files.
public enum PNGError: Error, CustomStringConvertible, Equatable {
    /// A text chunk that PNG cannot hold (the reason names the rule).
    case badText(key: String, reason: String)
    /// The image has no pixels, or is too large for PNG.
    case badImage(reason: String)
    case writeFailed(path: String, reason: String)
    case readFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .badText(key, reason): return "PNG text chunk \(key.debugDescription): \(reason)"
        case let .badImage(reason): return "PNG image: \(reason)"
        case let .writeFailed(path, reason): return "\(path): cannot write PNG: \(reason)"
        case let .readFailed(path, reason): return "\(path): not a readable PNG: \(reason)"
        }
    }
}

/// Writes 8-bit RGB PNGs through libpng, with text chunks the way A1111 stores its
/// `parameters` (PIL's `PngInfo.add_text`): a `tEXt` chunk when the value is Latin-1, else an
/// uncompressed `iTXt` chunk (UTF-8, empty language tag and translated keyword). Text chunks
/// come before the image data, as PIL writes them.
///
/// libpng reports errors by `longjmp`, which Swift cannot catch. Everything libpng could
/// reject is checked first (size, keywords, text), and the file is assembled in memory and
/// written with Foundation, so I/O errors are ordinary thrown errors; the only libpng error
/// left is running out of memory, which traps with libpng's message.
public enum PNGWriter {
    /// The PNG file bytes of `image` with `text` chunks in the given order.
    public static func encode(_ image: RGBImage, text: [(key: String, value: String)] = []) throws -> [UInt8] {
        guard image.width > 0, image.height > 0 else {
            throw PNGError.badImage(reason: "\(image.width)x\(image.height) has no pixels")
        }
        guard image.width <= 1_000_000, image.height <= 1_000_000 else {   // libpng's default user limits
            throw PNGError.badImage(reason: "\(image.width)x\(image.height) exceeds libpng's 1000000-pixel side limit")
        }
        let chunks = try text.map { try TextChunk(key: $0.key, value: $0.value) }

        let sink = ByteSink()
        var writer: png_structp? = png_create_write_struct(PNG_LIBPNG_VER_STRING, nil, pngFatalError, pngIgnoreWarning)
        var info = png_create_info_struct(writer)
        defer { png_destroy_write_struct(&writer, &info) }
        guard let png = writer, info != nil else {
            throw PNGError.badImage(reason: "libpng could not allocate a writer")
        }
        png_set_write_fn(png, Unmanaged.passUnretained(sink).toOpaque(), pngWriteBytes, pngFlush)
        png_set_IHDR(png, info, UInt32(image.width), UInt32(image.height), 8, PNG_COLOR_TYPE_RGB,
                     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT)
        // Same zlib level as PIL's default save (6): comparable file sizes.
        png_set_compression_level(png, 6)
        if !chunks.isEmpty {
            // png_set_text copies keys and texts, so the buffers need only live for the call.
            withTextStructs(chunks) { structs in
                png_set_text(png, info, structs.baseAddress, Int32(structs.count))
            }
        }
        png_write_info(png, info)
        image.pixels.withUnsafeBufferPointer { bytes in
            let rowBytes = image.width * 3
            for row in 0..<image.height {
                png_write_row(png, bytes.baseAddress! + row * rowBytes)
            }
        }
        png_write_end(png, nil)
        return sink.bytes
    }

    /// Writes `image` to `path` (replaced atomically).
    public static func write(_ image: RGBImage, text: [(key: String, value: String)] = [], to path: String) throws {
        let bytes = try encode(image, text: text)
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw PNGError.writeFailed(path: path, reason: error.localizedDescription)
        }
    }

    /// A checked text chunk: keyword and value bytes, and which chunk type holds them.
    struct TextChunk {
        let key: [CChar]
        let value: [CChar]
        let international: Bool

        init(key: String, value: String) throws {
            // PNG keywords: 1-79 Latin-1 printable characters, no leading, trailing or double spaces.
            let keyScalars = Array(key.unicodeScalars)
            guard (1...79).contains(keyScalars.count),
                  keyScalars.allSatisfy({ (0x20...0x7E).contains($0.value) || (0xA1...0xFF).contains($0.value) }),
                  keyScalars.first != " ", keyScalars.last != " ", !key.contains("  ") else {
                throw PNGError.badText(key: key, reason: "a keyword must be 1-79 printable Latin-1 characters without leading, trailing or double spaces")
            }
            guard !value.unicodeScalars.contains("\0") else {
                throw PNGError.badText(key: key, reason: "the text contains a NUL character")
            }
            self.key = keyScalars.map { CChar(bitPattern: UInt8($0.value)) } + [0]
            if value.unicodeScalars.allSatisfy({ $0.value <= 0xFF }) {
                international = false
                self.value = value.unicodeScalars.map { CChar(bitPattern: UInt8($0.value)) } + [0]
            } else {
                international = true
                self.value = value.utf8.map { CChar(bitPattern: $0) } + [0]
            }
        }
    }

    /// `png_text` structs pointing into copies of `chunks`' buffers, valid inside `body`.
    static func withTextStructs(_ chunks: [TextChunk], _ body: (UnsafeMutableBufferPointer<png_text>) -> Void) {
        var buffers: [UnsafeMutableBufferPointer<CChar>] = []
        defer { buffers.forEach { $0.deallocate() } }
        func copy(_ bytes: [CChar]) -> UnsafeMutablePointer<CChar> {
            let buffer = UnsafeMutableBufferPointer<CChar>.allocate(capacity: bytes.count)
            _ = buffer.initialize(from: bytes)
            buffers.append(buffer)
            return buffer.baseAddress!
        }
        var structs = chunks.map { chunk -> png_text in
            var entry = png_text()
            entry.compression = chunk.international ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE
            entry.key = copy(chunk.key)
            entry.text = copy(chunk.value)
            // libpng takes the length from itxt_length for iTXt, from text_length for tEXt.
            let length = chunk.value.count - 1
            entry.text_length = chunk.international ? 0 : length
            entry.itxt_length = chunk.international ? length : 0
            if chunk.international {
                entry.lang = copy([0])        // no language tag
                entry.lang_key = copy([0])    // no translated keyword
            }
            return entry
        }
        structs.withUnsafeMutableBufferPointer { body($0) }
    }
}

/// Collects the bytes libpng writes.
final class ByteSink {
    var bytes: [UInt8] = []
}

private func pngWriteBytes(_ png: png_structp?, _ data: png_bytep?, _ length: Int) {
    guard let png, let data, let io = png_get_io_ptr(png) else { return }
    let sink = Unmanaged<ByteSink>.fromOpaque(io).takeUnretainedValue()
    sink.bytes.append(contentsOf: UnsafeBufferPointer(start: data, count: length))
}

private func pngFlush(_ png: png_structp?) {}

/// libpng's error callback must not return. Inputs are validated before libpng sees them, so
/// this is reached only when libpng cannot allocate memory (or on a programming error).
private func pngFatalError(_ png: png_structp?, _ message: png_const_charp?) {
    fatalError("libpng: \(message.map { String(cString: $0) } ?? "unknown error")")
}

private func pngIgnoreWarning(_ png: png_structp?, _ message: png_const_charp?) {}
