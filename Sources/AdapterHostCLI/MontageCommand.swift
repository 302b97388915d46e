import ArgumentParser
import Foundation
import Runtime

/// `adapterhost montage A.png B.png … --label "A" --label "B" … --out SIDE.png`: images side by
/// side in one PNG, each under its label (the main job's comparison of adapter methods).
struct Montage: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put PNG images side by side in one PNG, each under a label.",
        discussion: """
        Panels keep their sizes and order, 4 pixels apart (scaled with the panels), on white; each \
        label is word-wrapped over its panel in a 5×7 pixel font (printable ASCII; other characters \
        show as '?'), drawn 2× for panels 512 pixels wide or more. Without --label a panel is \
        labelled with its file name. Prints each panel's mean absolute difference from the first \
        (for panels of the first one's size).
        """
    )

    @Argument(help: "The images (8-bit RGB or RGBA PNG), left to right.") var images: [String]
    @Option(help: "One label per image, in order (repeatable).") var label: [String] = []
    @Option(help: "Output PNG.") var out: String

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        guard label.isEmpty || label.count == images.count else {
            throw ValidationError("\(label.count) --label for \(images.count) images; give one per image or none")
        }
    }

    func run() throws {
        let pictures = try images.map { try PNGReader.read(path: $0).image }
        let scale = max(1, (pictures.map(\.width).max() ?? 0) / 256)
        let labels = label.isEmpty ? images.map { ($0 as NSString).lastPathComponent } : label
        let lines = zip(pictures, labels).map { $0.labelLines($1, scale: scale).count }.max() ?? 1
        let panels = zip(pictures, labels).map { $0.labelled($1, scale: scale, minimumLines: lines) }
        let composite = RGBImage.horizontalConcat(panels, gap: 4 * scale)
        try PNGWriter.write(composite, to: out)
        print("wrote \(out) (\(composite.width)x\(composite.height), \(panels.count) panels: \(labels.joined(separator: " | ")))")
        // How far each panel is from the first (same-size panels only): a comparison's effect sizes.
        guard let first = pictures.first else { return }
        for (picture, name) in zip(pictures, labels).dropFirst()
        where picture.width == first.width && picture.height == first.height {
            let total = zip(first.pixels, picture.pixels).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }
            print(String(format: "  %@: mean |difference| from the first panel %.2f of 255 per channel", name,
                         Double(total) / Double(max(first.pixels.count, 1))))
        }
    }
}
