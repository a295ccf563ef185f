// swift-tools-version:5.9
import PackageDescription

// Release builds (what `pip install` builds) drop Swift's runtime checks and, on x86-64, target
// AVX2+FMA (haswell): the elementwise kernels rely on it for speed. Debug builds (`swift test`)
// are optimized too, but keep every check (bounds, overflow, exclusivity).
var fastFlags: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]
#if arch(x86_64)
fastFlags.append(.unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release)))
#endif

let package = Package(
    name: "ACE",
    products: [
        .library(name: "ace_core", type: .dynamic, targets: ["ACEC"]),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CDNNL",
            providers: [.apt(["libdnnl-dev"])]
        ),
        .target(
            name: "ACE",
            dependencies: ["CBLAS", "CZlib", "CDNNL"],
            swiftSettings: fastFlags
        ),
        .target(
            name: "ACEC",
            dependencies: ["ACE"],
            swiftSettings: fastFlags,
            // The shared library must run where no Swift toolchain is installed.
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-l_FoundationCollections", "-l_FoundationCShims", "-lswiftSynchronization"])]
        ),
        .testTarget(
            name: "ACETests",
            dependencies: ["ACE"]
        ),
    ]
)
