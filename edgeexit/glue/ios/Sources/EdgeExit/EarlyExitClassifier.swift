// EarlyExitClassifier: the bundle's segments (one ExecuTorch .pte, XNNPACK) run one after another, and a sample stops
// at the first exit whose score reaches that exit's threshold. A thin wrapper over the edgeexit C API (edgeexit.h),
// the same one the Android JNI glue and the C++ runner call.
import CoreGraphics
import EdgeExitCore
import Foundation

/// A failure of the native runtime; `message` reads "what failed | got: ... | expected: ... | hint: ...".
public struct EdgeExitError: Error, CustomStringConvertible {
    public let code: Int
    public let message: String
    public var description: String { message }

    static func last(_ code: Int32) -> EdgeExitError {
        EdgeExitError(code: Int(code), message: String(cString: ee_last_error()))
    }
}

/// One method's result of `EarlyExitClassifier.verify()`: its test cases (from the bundle's pte/program.bpte) run on
/// this device, the largest errors against the expected outputs, and whether all were within the tolerance.
/// `maxError` is max |got - want| / (1 + |want|), what the tolerance bounds; `detail` says why it failed ("" if not).
public struct MethodCheck {
    public let method: String
    public let cases: Int
    public let passed: Bool
    public let maxAbsError: Double
    public let maxError: Double
    public let detail: String
}

/// The self-check of a bundle on this device: every method's `MethodCheck` and the tolerance they were held to.
public struct Verification {
    public let tolerance: Double
    public let methods: [MethodCheck]
    /// True when every method the bundle needs has test vectors and all of them pass.
    public var passed: Bool { !methods.isEmpty && methods.allSatisfy { $0.passed } }
}

public final class EarlyExitClassifier {
    /// Per sample: the predicted class, the exit that answered, and that exit's logits (n x numClasses).
    public struct Result {
        public let predictions: [Int64]
        public let exits: [Int32]
        public let logits: [Float]
    }

    /// One image's answer: the class's name (the manifest's class_names), its index, and the exit that answered.
    public struct Prediction {
        public let className: String
        public let classIndex: Int
        public let exit: Int
    }

    /// One sample's shape: channels, height, width (pixels are NCHW float32, normalised as the manifest says).
    public let inputShape: [Int]
    /// What each class index means (the manifest's class_names).
    public let classNames: [String]
    private let mean: [Float], std: [Float], resize: String
    public let numClasses: Int
    public let numExits: Int
    private let handle: OpaquePointer
    private let lock = NSLock()  // the C runtime owns its buffers: one call at a time

    /// Verifies the bundle (manifest checksum, its JSON Schema, exactly the listed files, every file's sha256; a
    /// listed file missing is refused) and loads its segments. Ship the deployable bundle (`edgeexit export` writes
    /// it beside the development one, BUNDLE-slim: the .pte and what it needs); it is verified the same way.
    public init(bundleDirectory: URL) throws {
        guard let handle = ee_open(bundleDirectory.path) else {
            throw EdgeExitError.last(Int32(EE_ERR_BUNDLE))
        }
        var chw = [Int64](repeating: 0, count: 3)
        let status = ee_input_shape(handle, &chw)
        guard Int(status) == EE_OK else {
            ee_close(handle)
            throw EdgeExitError.last(status)
        }
        var mean = [Float](repeating: 0, count: Int(chw[0])), std = mean
        let normalisation = ee_input_normalisation(handle, &mean, &std)
        guard Int(normalisation) == EE_OK else {
            let error = EdgeExitError.last(normalisation)
            ee_close(handle)
            throw error
        }
        self.mean = mean
        self.std = std
        resize = ee_input_resize(handle).map { String(cString: $0) } ?? "bilinear"
        self.handle = handle
        inputShape = chw.map { Int($0) }
        numClasses = Int(ee_num_classes(handle))
        numExits = Int(ee_num_exits(handle))
        classNames = (0..<Int64(numClasses)).map { k in ee_class_name(handle, k).map { String(cString: $0) } ?? "" }
    }

    /// How an image becomes this bundle's input (the manifest's input section; see `ImageInput`). Throws for a bundle
    /// whose input images cannot make (other than 1 or 3 channels): feed that one floats.
    public func imageSpec() throws -> ImageSpec {
        try ImageSpec(channels: inputShape[0], height: inputShape[1], width: inputShape[2], mean: mean, std: std,
                      resize: resize)
    }

    deinit {
        ee_close(handle)
    }

    /// Classifies `count` samples laid out one after another in `pixels` (count x C x H x W floats).
    public func classify(_ pixels: [Float], count: Int) throws -> Result {
        let sampleSize = inputShape.reduce(1, *)
        guard count >= 1, pixels.count == count * sampleSize else {
            throw EdgeExitError(code: Int(EE_ERR_ARGUMENT), message:
                "classify: pixels has the wrong size | got: \(pixels.count) floats for count \(count) | " +
                "expected: count x \(inputShape.map(String.init).joined(separator: " x "))")
        }
        lock.lock()
        defer { lock.unlock() }
        var predictions = [Int64](repeating: 0, count: count)
        var exits = [Int32](repeating: 0, count: count)
        var logits = [Float](repeating: 0, count: count * numClasses)
        let status = pixels.withUnsafeBufferPointer { x in
            ee_run(handle, x.baseAddress, Int64(count), &predictions, &exits, &logits)
        }
        guard Int(status) == EE_OK else { throw EdgeExitError.last(status) }
        return Result(predictions: predictions, exits: exits, logits: logits)
    }

    /// Classifies one image of 8-bit RGB bytes (3 per pixel, row by row), preprocessed as in training.
    public func classify(rgb: [UInt8], width: Int, height: Int) throws -> Prediction {
        try predictions(classify(ImageInput.fromRGB(rgb, width: width, height: height, spec: imageSpec()), count: 1))[0]
    }

    /// Classifies a CGImage (UIImage.cgImage), preprocessed as in training; alpha is dropped.
    public func classify(image: CGImage) throws -> Prediction {
        try predictions(classify(ImageInput.fromCGImage(image, spec: imageSpec()), count: 1))[0]
    }

    /// Each sample of `result` with its class's name.
    public func predictions(_ result: Result) -> [Prediction] {
        zip(result.predictions, result.exits).map { k, exit in
            Prediction(className: classNames[Int(k)], classIndex: Int(k), exit: Int(exit))
        }
    }

    /// Runs the bundle's test vectors (pte/program.bpte, made at export) through the program this classifier runs and
    /// compares every output with the tolerance of the bundle's precision (1e-4 fp32, 0.1 int8): do it once before
    /// trusting the device's answers, and check `passed`. A failing vector is a result, not an error; the call
    /// throws `EdgeExitError` only when the vectors cannot be read, or the bundle has none: a deployable bundle
    /// (BUNDLE-slim) carries them only when exported with --slim-vectors.
    public func verify() throws -> Verification {
        lock.lock()
        defer { lock.unlock() }
        let status = ee_verify(handle, nil)
        guard Int(status) == EE_OK || Int(status) == EE_ERR_VERIFY else { throw EdgeExitError.last(status) }
        var methods: [MethodCheck] = []
        for i in 0..<Int(ee_verify_count(handle)) {
            var m = ee_method_check()
            guard Int(ee_verify_result(handle, Int32(i), &m)) == EE_OK else { continue }
            methods.append(MethodCheck(method: String(cString: m.method), cases: Int(m.cases), passed: m.passed != 0,
                                       maxAbsError: m.max_abs_error, maxError: m.max_error,
                                       detail: String(cString: m.detail)))
        }
        return Verification(tolerance: ee_verify_tolerance(handle), methods: methods)
    }

    /// Milliseconds each segment took in the last `classify` call.
    public func segmentMilliseconds() -> [Double] {
        lock.lock()
        defer { lock.unlock() }
        return (0..<numExits).map { ee_segment_ms(handle, Int32($0)) }
    }
}
