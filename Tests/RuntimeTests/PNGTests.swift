import Foundation
import Testing
@testable import Runtime

/// The PNG writer (libpng) and reader, against PNGs PIL saved as A1111 saves them
/// (Fixtures/generation/png, tools/gen_generation_fixtures.py).
@Suite("PNG")
struct PNGTests {
    /// The fixtures' pixels: `np.arange(45).reshape(3, 5, 3) * 5` (height 3, width 5).
    static let fixturePixels = RGBImage(width: 5, height: 3, pixels: (0..<45).map { UInt8($0 * 5) })
    static let latin1Text = "a café, naïve\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Seed: 1"
    static let utf8Text = "ein Kätzchen 猫 <lora:名前:0.5>\nSteps: 4, Sampler: DDIM, Seed: 2"

    static func fixture(_ name: String) throws -> [UInt8] {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return [UInt8](try Data(contentsOf: base.appendingPathComponent("generation/png/\(name).png")))
    }

    /// (type, body) of every chunk, walked independently of the reader under test.
    static func rawChunks(_ bytes: [UInt8]) -> [(type: String, body: [UInt8])] {
        var result: [(String, [UInt8])] = []
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            result.append((type, Array(bytes[(offset + 8)..<(offset + 8 + length)])))
            offset += 12 + length
        }
        return result
    }

    @Test("PIL's A1111-style PNGs read back: pixels, tEXt (Latin-1) and iTXt (UTF-8) parameters",
          arguments: [("latin1", latin1Text, "tEXt"), ("utf8", utf8Text, "iTXt")])
    func readsPIL(name: String, text: String, chunk: String) throws {
        let file = try PNGReader.decode(try Self.fixture(name), name: name)
        #expect(file.image == Self.fixturePixels)
        #expect(file.text(for: "parameters") == text)
        #expect(file.chunkTypes.contains(chunk))
        #expect(file.compressedTextKeys.isEmpty)
    }

    @Test("Our text chunk is byte for byte PIL's for the same text, and comes before the image data",
          arguments: [("latin1", latin1Text, "tEXt"), ("utf8", utf8Text, "iTXt")])
    func sameChunkAsPIL(name: String, text: String, chunk: String) throws {
        let ours = try PNGWriter.encode(Self.fixturePixels, text: [("parameters", text)])
        let pil = try Self.fixture(name)
        let ourChunk = try #require(Self.rawChunks(ours).first { $0.type == chunk })
        let pilChunk = try #require(Self.rawChunks(pil).first { $0.type == chunk })
        #expect(ourChunk.body == pilChunk.body)
        let types = Self.rawChunks(ours).map(\.type)
        #expect(types.first == "IHDR" && types.last == "IEND")
        #expect(types.firstIndex(of: chunk)! < types.firstIndex(of: "IDAT")!)
        // IHDR: width 5, height 3, 8-bit, colour type 2 (RGB), no interlace.
        let ihdr = try #require(Self.rawChunks(ours).first { $0.type == "IHDR" }).body
        #expect(ihdr == [0, 0, 0, 5, 0, 0, 0, 3, 8, 2, 0, 0, 0])
    }

    @Test("Write then read: pixels, several text chunks in order, through a file")
    func roundTrip() throws {
        var image = RGBImage(width: 7, height: 4, fill: (10, 20, 30))
        image[6, 3] = (255, 0, 128)
        image[0, 0] = (1, 2, 3)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("png-\(UUID().uuidString).png").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PNGWriter.write(image, text: [("parameters", "x: 1, y"), ("Comment", "ümlaut"), ("Software", "adapterhost ✓")],
                            to: path)
        let file = try PNGReader.read(path: path)
        #expect(file.image == image)
        #expect(file.text.map(\.key) == ["parameters", "Comment", "Software"])
        #expect(file.text.map(\.value) == ["x: 1, y", "ümlaut", "adapterhost ✓"])
        #expect(file.chunkTypes.filter { $0 == "tEXt" }.count == 2 && file.chunkTypes.filter { $0 == "iTXt" }.count == 1)
    }

    @Test("Text PNG cannot hold is refused before libpng sees it")
    func badText() {
        let image = RGBImage(width: 1, height: 1)
        #expect(throws: PNGError.self) { try PNGWriter.encode(image, text: [("", "x")]) }
        #expect(throws: PNGError.self) { try PNGWriter.encode(image, text: [(String(repeating: "k", count: 80), "x")]) }
        #expect(throws: PNGError.self) { try PNGWriter.encode(image, text: [(" lead", "x")]) }
        #expect(throws: PNGError.self) { try PNGWriter.encode(image, text: [("ключ", "x")]) }
        #expect(throws: PNGError.self) { try PNGWriter.encode(image, text: [("parameters", "a\u{0}b")]) }
        #expect(throws: PNGError.self) { try PNGWriter.encode(RGBImage(width: 0, height: 3)) }
    }

    @Test("A damaged file is reported, not trusted")
    func damaged() throws {
        var bytes = try PNGWriter.encode(RGBImage(width: 2, height: 2), text: [("parameters", "abc")])
        let textChunk = try #require(Self.rawChunks(bytes).firstIndex { $0.type == "tEXt" })
        // Flip one byte of the text inside the tEXt chunk: its CRC no longer matches.
        var offset = 8
        for chunk in Self.rawChunks(bytes).prefix(textChunk) { offset += 12 + chunk.body.count }
        bytes[offset + 8 + 11] ^= 0x20
        #expect(throws: PNGError.self) { try PNGReader.decode(bytes) }
        #expect(throws: PNGError.self) { try PNGReader.decode([0x89, 0x50, 0x4E]) }
        #expect(CRC32.checksum(Array("IEND".utf8)) == 0xAE42_6082)   // every PNG ends with this CRC
    }
}
