import Foundation

/// A one-line progress bar on stderr (redrawn in place on a terminal; silent otherwise).
final class ProgressBar {
    private let label: String
    private let total: Int
    private let enabled: Bool
    private var done = 0
    private var lastDrawn = -1
    private let start = Date()

    init(label: String, total: Int, enabled: Bool = true) {
        self.label = label
        self.total = total
        // Only draw on a terminal: logs and pipes get the summary, not carriage returns.
        self.enabled = enabled && isatty(STDERR_FILENO) != 0 && total > 0
    }

    func advance(by n: Int = 1) {
        done += n
        guard enabled else { return }
        let percent = done * 100 / max(total, 1)
        if percent == lastDrawn { return }
        lastDrawn = percent
        let width = 30, filled = width * done / max(total, 1)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let elapsed = Date().timeIntervalSince(start)
        FileHandle.standardError.write("\r\(label) \(bar) \(done)/\(total) \(String(format: "%.1fs", elapsed))".data(using: .utf8)!)
    }

    func finish() {
        if enabled && lastDrawn >= 0 { FileHandle.standardError.write("\n".data(using: .utf8)!) }
    }
}

/// Writes one line to stderr.
func printError(_ line: String) {
    FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
}
