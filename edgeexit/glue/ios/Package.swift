// swift-tools-version:5.9
// EdgeExit for iOS: EarlyExitClassifier (Swift) over the edgeexit C API (executorch, built for iOS as
// EdgeExitCore.xcframework), on ExecuTorch's prebuilt runtime, XNNPACK backend and CPU kernels.
// Not compiled on the machines that develop edgeexit (no Swift toolchain there); see README.md.
import PackageDescription

let package = Package(
    name: "EdgeExit",
    platforms: [.iOS(.v17), .macOS(.v12)],
    products: [
        .library(name: "EdgeExit", targets: ["EdgeExit"]),
    ],
    dependencies: [
        // The same ExecuTorch version the bundles are exported with (executorch==1.5.1 in edgeexit's venv).
        .package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.5.1"),
    ],
    targets: [
        // libedgeexit.a + edgeexit.h + EdgeExitCore/module.modulemap, made by the commands in README.md.
        .binaryTarget(name: "EdgeExitCore", path: "Frameworks/EdgeExitCore.xcframework"),
        .target(
            name: "EdgeExit",
            dependencies: [
                "EdgeExitCore",
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
            ],
            linkerSettings: [.linkedLibrary("c++")]
        ),
    ]
)
