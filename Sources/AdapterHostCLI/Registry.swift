import Foundation
import Host
import DreamBooth
import Hypernetwork
import LoRA
import TextualInversion

/// The composition root's registry: the built-in adapter methods, then the runtime plugins of
/// `pluginDir` (nil: none). Plugin failures never stop the host; they are returned for the
/// command to report.
func makeRegistry(pluginDir: String?) -> (AdapterRegistry, [PluginLoadFailure]) {
    let registry = AdapterRegistry()
    registerBuiltIns(into: registry)
    guard let pluginDir else { return (registry, []) }
    let result = PluginLoader.loadAll(directory: pluginDir, into: registry)
    return (registry, result.failures)
}

/// Registers the built-in methods. Ids are unique by construction, so a failure here is a
/// programming error.
func registerBuiltIns(into registry: AdapterRegistry) {
    // Built-in ids are unique by construction: a failure here is a programming error.
    try! registerLoRAFamily(into: registry)
    try! registerTextualInversion(into: registry)
    try! registerHypernetwork(into: registry)
    try! registerDreamBooth(into: registry)
}

/// The default plugin directory for a command working on `path`: `plugins/` beside it, when
/// that directory exists (nil otherwise: no plugins, nothing to report).
func defaultPluginDir(besideFile path: String) -> String? {
    let dir = (URL(fileURLWithPath: path).deletingLastPathComponent().path as NSString)
        .appendingPathComponent("plugins")
    return isDirectory(dir) ? dir : nil
}

/// The default plugin directory when no file is involved: `plugins/` in the working
/// directory, when it exists.
func defaultPluginDirInWorkingDirectory() -> String? {
    isDirectory("plugins") ? "plugins" : nil
}

private func isDirectory(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
}

/// Prints each plugin failure to stderr, one line each (the host goes on without them).
func reportPluginFailures(_ failures: [PluginLoadFailure]) {
    for failure in failures {
        FileHandle.standardError.write(Data("warning: plugin not loaded: \(failure)\n".utf8))
    }
}
