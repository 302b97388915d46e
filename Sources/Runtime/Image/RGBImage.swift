import Tensor

/// An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// `width · height · 3` bytes.
    public var pixels: [UInt8]

    /// An image of one colour.
    public init(width: Int, height: Int, fill: (r: UInt8, g: UInt8, b: UInt8) = (255, 255, 255)) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        self.width = width
        self.height = height
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.r
            pixels[3 * i + 1] = fill.g
            pixels[3 * i + 2] = fill.b
        }
        self.pixels = pixels
    }

    /// An image over existing bytes (`width · height · 3` of them).
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height) RGB (need \(width * height * 3))")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A1111's conversion of the first image of a VAE output `decoded` [B, 3, H, W]:
    /// `x = clamp((x + 1) / 2, 0, 1)` (torch, F32), then `(255. * x).astype(np.uint8)` (numpy
    /// multiplies the F32 array by the Python float in F32, and the cast truncates toward 0).
    public init(decoded: Tensor) {
        precondition(decoded.rank == 4 && decoded.shape[1] == 3, "RGBImage: VAE output \(decoded.shape) is not [B, 3, H, W]")
        let (height, width) = (decoded.shape[2], decoded.shape[3])
        let plane = height * width
        let values = decoded.sliced(axis: 0, 0..<1).to(.f32).contiguous().floats
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        for channel in 0..<3 {
            for i in 0..<plane {
                pixels[3 * i + channel] = Self.a1111Byte(values[channel * plane + i])
            }
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// One channel value of a VAE output as A1111 stores it (NaN becomes 0, as numpy's cast
    /// of NaN to uint8 gives on x86).
    @inline(__always)
    public static func a1111Byte(_ x: Float) -> UInt8 {
        var y = (x + 1) / 2
        y = y.isNaN ? y : min(max(y, 0), 1)          // torch.clamp keeps NaN
        let scaled = Float(255) * y                   // F32 product, as numpy does
        guard scaled.isFinite else { return 0 }
        return UInt8(scaled.rounded(.towardZero))     // astype(np.uint8): truncation, scaled ∈ [0, 255]
    }

    /// The pixel at (x, y).
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        get {
            let i = 3 * (y * width + x)
            return (pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            let i = 3 * (y * width + x)
            pixels[i] = newValue.r
            pixels[i + 1] = newValue.g
            pixels[i + 2] = newValue.b
        }
    }

    /// Copies `image` with its top-left corner at (x, y), clipped to this image.
    public mutating func draw(_ image: RGBImage, x: Int, y: Int) {
        for row in 0..<image.height where (0..<height).contains(y + row) {
            for column in 0..<image.width where (0..<width).contains(x + column) {
                self[x + column, y + row] = image[column, row]
            }
        }
    }

    /// `images` left to right, tops aligned, `gap` pixels of `background` between them; the
    /// height is the tallest one's.
    public static func horizontalConcat(_ images: [RGBImage], gap: Int = 0,
                                        background: (r: UInt8, g: UInt8, b: UInt8) = (255, 255, 255)) -> RGBImage {
        let width = images.reduce(0) { $0 + $1.width } + gap * max(images.count - 1, 0)
        let height = images.map(\.height).max() ?? 0
        var out = RGBImage(width: width, height: height, fill: background)
        var x = 0
        for image in images {
            out.draw(image, x: x, y: 0)
            x += image.width + gap
        }
        return out
    }

    /// This image under a strip holding `text` (word-wrapped to the image's width, drawn with
    /// `LabelFont` at `scale`; black on white). Text wider than the image is cut at the edge.
    /// The strip has room for at least `minimumLines` lines, so panels whose labels wrap
    /// differently can share one height.
    public func labelled(_ text: String, scale: Int = 1, minimumLines: Int = 1) -> RGBImage {
        let lines = labelLines(text, scale: scale)
        let lineHeight = (LabelFont.glyphHeight + 2) * scale
        let strip = lineHeight * max(lines.count, minimumLines, 1) + 2 * scale
        var out = RGBImage(width: width, height: height + strip, fill: (255, 255, 255))
        for (index, line) in lines.enumerated() {
            LabelFont.draw(line, into: &out, x: scale, y: scale + index * lineHeight + scale, scale: scale,
                           color: (0, 0, 0))
        }
        out.draw(self, x: 0, y: strip)
        return out
    }

    /// The lines `labelled` draws `text` in.
    public func labelLines(_ text: String, scale: Int = 1) -> [String] {
        LabelFont.wrap(text, maxWidth: max(width - 2 * scale, 1), scale: scale)
    }
}
