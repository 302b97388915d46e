import CKernels

/// The BLAS/LAPACK backend: OpenBLAS and LAPACKE opened at run time with the kernel set
/// chosen for this CPU (see Sources/CKernels/blas_loader.c for why they are not linked).
public enum BLAS {
    /// Why the backend could not be used.
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// Loads the libraries once; later calls are free. Throws when they are missing.
    public static func ensureLoaded() throws {
        let status = ah_blas_load()!.pointee
        if status.loaded == 0 {
            throw Unavailable(description: withUnsafeBytes(of: status.error) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) })
        }
    }

    /// Loads the libraries or stops with their error: every op that needs BLAS calls this,
    /// and a missing OpenBLAS is an installation fault, not a recoverable input error.
    static func require() {
        do { try ensureLoaded() } catch { fatalError("BLAS unavailable: \(error)") }
    }

    /// OpenBLAS's name for the kernels it runs (e.g. "Haswell", "Zen", "SkylakeX").
    public static var coreName: String { String(cString: ah_blas_corename()) }

    /// The kernel set we asked for, or nil when OpenBLAS chose on its own.
    public static var requestedCoreType: String? {
        let status = ah_blas_load()!.pointee
        let s = withUnsafeBytes(of: status.chosen_coretype) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return s.isEmpty ? nil : s
    }

    /// True when the user set OPENBLAS_CORETYPE before we loaded the library.
    public static var coreTypeFromEnvironment: Bool { ah_blas_load()!.pointee.coretype_from_env != 0 }

    /// The kernel set we would request for a feature set (nil: leave it to OpenBLAS).
    public static func chooseCoreType(for features: ah_cpu_features) -> String? {
        var f = features
        guard let p = ah_blas_choose_coretype(&f) else { return nil }
        return String(cString: p)
    }

    /// Threads OpenBLAS uses for large calls.
    public static var threadCount: Int {
        get { Int(ah_blas_num_threads()) }
        set { ah_blas_set_num_threads(Int32(newValue)) }
    }
}

/// This CPU's features as CKernels detected them.
public enum CPU {
    /// The detected feature set.
    public static var features: ah_cpu_features { ah_cpu_detect()!.pointee }

    /// Conversion kernel families, slowest first.
    public enum DispatchLevel: Int, Sendable, CaseIterable {
        case portable = 0, avx2F16C = 1, avx512 = 2
    }

    /// The best kernel family this CPU runs.
    public static var bestLevel: DispatchLevel { DispatchLevel(rawValue: Int(ah_dispatch_best().rawValue))! }

    /// The kernel family in force; setting it lowers (or restores) the level, clamped to the best.
    public static var level: DispatchLevel {
        get { DispatchLevel(rawValue: Int(ah_dispatch_current().rawValue))! }
        set { _ = ah_dispatch_set(ah_dispatch_level(rawValue: UInt32(newValue.rawValue))) }
    }
}
