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
        .systemLibrary(
            name: "CFFI", path: "Sources/CFFI", pkgConfig: "libffi",
            providers: [.apt(["libffi-dev"])]
        ),
        // Safe reader of PyTorch pickles (.pt/.ckpt/.bin): builds tensors, executes nothing.
        .target(name: "TorchPickle", dependencies: ["Tensor"], path: "Sources/TorchPickle"),
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]
        ),
        // The plugin ABI: one header, shared by the host and by plugins in any language.
        .target(name: "CAdapterHostPlugin", path: "Sources/CAdapterHostPlugin"),
        .target(
            name: "Host", dependencies: ["Tensor", "SafeTensors", "TorchPickle", "CFFI", "CAdapterHostPlugin"], path: "Sources/Host",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        .target(name: "LoRA", dependencies: ["Host", "Tensor", "SafeTensors"], path: "Sources/Adapters/LoRA"),
        .target(name: "TextualInversion", dependencies: ["Host", "Tensor", "TorchPickle"], path: "Sources/Adapters/TextualInversion"),
        .target(name: "Hypernetwork", dependencies: ["Host", "Tensor", "TorchPickle"], path: "Sources/Adapters/Hypernetwork"),
        .target(name: "DreamBooth", dependencies: ["Host", "Tensor", "SafeTensors"], path: "Sources/Adapters/DreamBooth"),
        // The Stable Diffusion runtime: meets adapter methods only through Host's protocols.
        .target(
            name: "Runtime", dependencies: ["Host", "Tensor", "SafeTensors", "CPNG"], path: "Sources/Runtime",
            resources: [.copy("Resources")]
        ),
        .executableTarget(
            name: "AdapterHostCLI",
            dependencies: [
                "Tensor", "SafeTensors", "Host", "LoRA", "TextualInversion", "Hypernetwork", "DreamBooth", "Runtime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/AdapterHostCLI"
        ),
        .executableTarget(
            name: "adapterhost-bench",
            dependencies: ["Tensor", "SafeTensors", "Host", "Runtime", "LoRA"],
            path: "Benchmarks/adapterhost-bench"
        ),
        .testTarget(
            name: "TensorTests", dependencies: ["Tensor"], path: "Tests/TensorTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "SafeTensorsTests", dependencies: ["SafeTensors"], path: "Tests/SafeTensorsTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            // LoRA: the patch-engine tests apply real LoRA/DoRA modules (and read LoRATests' fixtures).
            name: "HostTests", dependencies: ["Host", "LoRA"], path: "Tests/HostTests",
            // BadPlugins/*.c are compiled by the plugin tests at run time, not by SwiftPM.
            exclude: ["BadPlugins"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "LoRATests", dependencies: ["LoRA", "Host"], path: "Tests/LoRATests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            // TextualInversion, Hypernetwork: AdapterConformance*Tests load real TI/hypernetwork files
            // through the registry (the Runtime library itself never depends on method modules).
            name: "RuntimeTests", dependencies: ["Runtime", "Host", "LoRA", "TextualInversion", "Hypernetwork"],
            path: "Tests/RuntimeTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "TorchPickleTests", dependencies: ["TorchPickle"], path: "Tests/TorchPickleTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "TextualInversionTests",
            // LoRA, Hypernetwork and DreamBooth too: detection across every built-in method.
            dependencies: ["TextualInversion", "Hypernetwork", "DreamBooth", "LoRA", "Host", "SafeTensors", "TorchPickle"],
            path: "Tests/TextualInversionTests", resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "HypernetworkTests", dependencies: ["Hypernetwork", "Host", "SafeTensors", "TorchPickle"],
            path: "Tests/HypernetworkTests", resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "DreamBoothTests", dependencies: ["DreamBooth", "Host", "SafeTensors"],
            path: "Tests/DreamBoothTests", resources: [.copy("Fixtures")]
        ),
        .testTarget(
            // Runtime, Host, TorchPickle: the generate tests compare the binary's latents with the
            // same generation run in process with hand-made hooks (embedding vectors, a naive
            // hypernetwork transform built from the file's weights).
            name: "AdapterHostCLITests", dependencies: ["SafeTensors", "Tensor", "Runtime", "Host", "TorchPickle"],
            path: "Tests/AdapterHostCLITests"
        ),
    ],
    // Swift 5 mode: the tensor core shares raw buffers across DispatchQueue.concurrentPerform
    // chunks by design (disjoint ranges), which Swift 6's Sendable checking cannot express.
    swiftLanguageModes: [.v5]
)
