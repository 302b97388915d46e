import Foundation
import Host
import SafeTensors
import Tensor

/// Building and locating plugins for the plugin tests: the example plugins (via their Makefile)
/// and the tiny bad plugins under BadPlugins/ (via `cc`), into one temporary directory per run.
enum PluginTestSupport {
    /// The repository root, found from this file's path (Tests/HostTests/<this file>).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let includeDir = repoRoot.appendingPathComponent("Sources/CAdapterHostPlugin/include").path
    static let badPluginsDir = repoRoot.appendingPathComponent("Tests/HostTests/BadPlugins").path
    static let fixturesDir = repoRoot.appendingPathComponent("Tests/HostTests/Fixtures/plugins").path

    /// A fresh directory for this test process.
    static let workDir: String = {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("adapterhost-plugin-tests-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// The example plugins (vera.so, hra.so), built once per run with `make -C plugins OUT=…`.
    static let examplePluginsDir: String = {
        let out = workDir + "/examples"
        run("/usr/bin/env", ["make", "-s", "-C", repoRoot.appendingPathComponent("plugins").path, "OUT=\(out)"])
        return out
    }()

    /// Compiles Tests/HostTests/BadPlugins/<name>.c into `directory`/<fileName or name>.so
    /// (default: a per-name directory, so each test loads only what it asks for).
    @discardableResult
    static func compileBadPlugin(_ name: String, into directory: String? = nil, as fileName: String? = nil) -> String {
        // Tests run in parallel and may ask for the same plugin: build under a lock, into a
        // temporary name, renamed when complete, so nobody dlopens a half-written file.
        compileLock.lock()
        defer { compileLock.unlock() }
        let dir = directory ?? workDir + "/single/\(name)"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let output = dir + "/\(fileName ?? name).so"
        if !FileManager.default.fileExists(atPath: output) {
            let partial = output + ".partial"
            run("/usr/bin/env", ["cc", "-std=c11", "-shared", "-fPIC", "-fvisibility=hidden", "-I", includeDir,
                                 badPluginsDir + "/\(name).c", "-o", partial, "-lm"])
            try! FileManager.default.moveItem(atPath: partial, toPath: output)
        }
        return output
    }

    private static let compileLock = NSLock()

    /// Runs a build command; a failure stops the test run with the tool's output.
    static func run(_ tool: String, _ arguments: [String]) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try! process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0,
                     "\(arguments.joined(separator: " ")) failed:\n\(String(decoding: output, as: UTF8.self))")
    }

    /// A safetensors fixture as a `TensorSource`.
    static func fixture(_ path: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: fixturesDir + "/" + path)
    }
}

/// The largest |a − b| relative to the largest |b| (both F32, same shape).
func relativeMaxError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape, "shapes \(a.shape) and \(b.shape) differ")
    let x = a.to(.f32).floats, y = b.to(.f32).floats
    var err: Float = 0, scale: Float = 0
    for i in x.indices {
        err = max(err, abs(x[i] - y[i]))
        scale = max(scale, abs(y[i]))
    }
    return err / max(scale, .leastNormalMagnitude)
}

/// W + ΔW elementwise (F32).
func adding(_ w: Tensor, _ d: Tensor) -> Tensor {
    precondition(w.shape == d.shape)
    let x = w.to(.f32).floats, y = d.floats
    return Tensor(shape: w.shape, values: zip(x, y).map { $0 + $1 })
}
