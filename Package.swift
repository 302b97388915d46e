// swift-tools-version:6.0
import PackageDescription

// Dependency arrows run one way:
//   CKernels ← Tensor ← SafeTensors ← Host ← {adapter methods, runtime} ← CLI
// OpenBLAS and LAPACKE are not linked at build time: CKernels opens them with dlopen after
// choosing OpenBLAS's kernel set for this CPU (see Sources/CKernels/blas_loader.c).
let package = Package(
    name: "AdapterHost",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "adapterhost", targets: ["AdapterHostCLI"]),
        .library(name: "Tensor", targets: ["Tensor"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [.unsafeFlags(["-O3"])],
            linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("m")]
        ),
        .target(name: "Tensor", dependencies: ["CKernels"], path: "Sources/Tensor"),
        .target(name: "SafeTensors", dependencies: ["Tensor"], path: "Sources/SafeTensors"),
        .executableTarget(
            name: "AdapterHostCLI",
            dependencies: [
                "Tensor", "SafeTensors",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/AdapterHostCLI"
        ),
        .executableTarget(
            name: "adapterhost-bench",
            dependencies: ["Tensor", "SafeTensors"],
            path: "Benchmarks/adapterhost-bench"
        ),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"], path: "Tests/TensorTests"),
        .testTarget(
            name: "SafeTensorsTests", dependencies: ["SafeTensors"], path: "Tests/SafeTensorsTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "AdapterHostCLITests", dependencies: ["SafeTensors"], path: "Tests/AdapterHostCLITests"
        ),
    ],
    // Swift 5 mode: the tensor core shares raw buffers across DispatchQueue.concurrentPerform
    // chunks by design (disjoint ranges), which Swift 6's Sendable checking cannot express.
    swiftLanguageModes: [.v5]
)
