package dev.edgeexit

import java.io.Closeable

/** A failure of the native runtime; the message reads "what failed | got: ... | expected: ... | hint: ...". */
class EdgeExitException(message: String) : RuntimeException(message)

/**
 * One method's result of [EarlyExitClassifier.verify]: its test cases (from the bundle's pte/program.bpte) run on
 * this device, the largest errors against the expected outputs, and whether all were within the tolerance.
 * [maxError] is max |got - want| / (1 + |want|), what the tolerance bounds; [detail] says why it failed ("" if not).
 */
class MethodCheck(val method: String, val cases: Int, val passed: Boolean, val maxAbsError: Double,
                  val maxError: Double, val detail: String)

/** The self-check of a bundle on this device: every method's [MethodCheck] and the tolerance they were held to. */
class Verification(val tolerance: Double, val methods: List<MethodCheck>) {
    /** True when every method the bundle needs has test vectors and all of them pass. */
    val passed: Boolean get() = methods.isNotEmpty() && methods.all { it.passed }
}

/**
 * An early-exit classifier: the bundle's segments (one ExecuTorch .pte, XNNPACK) run one after another, and a
 * sample stops at the first exit whose score reaches that exit's threshold. Backed by the edgeexit C API
 * (libedgeexit) through libedgeexit_jni.
 *
 * Opening verifies the bundle (manifest checksum, its JSON Schema, exactly the listed files, every file's sha256)
 * and throws [EdgeExitException] when it does not hold, a listed file missing included. Ship the deployable bundle
 * (`edgeexit export` writes it beside the development one, BUNDLE-slim: the .pte and what it needs); it is
 * verified the same way. Calls are serialised; use one classifier per thread for parallel work.
 *
 *     EarlyExitClassifier(bundleDir).use { c ->
 *         check(c.verify().passed) { "this device does not reproduce the bundle's test vectors" }
 *         val answer = c.classify(bitmap)           // or classifyRgb(bytes, w, h): preprocessed as in training
 *         Log.i("edgeexit", "${answer.className} (exit ${answer.exit})")
 *         val r = c.classify(pixels, n)             // n images already normalised, NCHW floats
 *     }
 *
 * @param bundleDir a directory on the device's file system (copy the bundle out of the APK's assets first).
 */
class EarlyExitClassifier(bundleDir: String) : Closeable {

    /** Per sample: the predicted class, the exit that answered, and that exit's logits (n x numClasses). */
    class Result(val predictions: LongArray, val exits: IntArray, val logits: FloatArray)

    /** One image's answer: the class's name (the manifest's class_names), its index, and the exit that answered. */
    class Prediction(val className: String, val classIndex: Int, val exit: Int)

    private var handle: Long = EdgeExitNative.open(bundleDir)

    /** One sample's shape: channels, height, width (the pixels are NCHW float32, normalised as the manifest says). */
    val inputShape: IntArray = EdgeExitNative.inputShape(handle)
    val numClasses: Int = EdgeExitNative.numClasses(handle)
    val numExits: Int = EdgeExitNative.numExits(handle)
    private val sampleSize: Int = inputShape[0] * inputShape[1] * inputShape[2]

    /** What each class index means (the manifest's class_names). */
    val classNames: List<String> = EdgeExitNative.classNames(handle).map { String(it, Charsets.UTF_8) }

    /** How an image becomes this bundle's input (the manifest's input section); see [ImageInput]. Read when first
     *  used: a bundle whose input images cannot make (other than 1 or 3 channels) still classifies floats. */
    val imageSpec: ImageSpec by lazy {
        val ms = EdgeExitNative.inputNormalisation(handle)
        val c = inputShape[0]
        ImageSpec(c, inputShape[1], inputShape[2], ms.copyOfRange(0, c), ms.copyOfRange(c, 2 * c),
                  EdgeExitNative.inputResize(handle))
    }

    /** Classifies one image of 8-bit RGB bytes (3 per pixel, row by row), preprocessed as in training. */
    fun classifyRgb(rgb: ByteArray, width: Int, height: Int): Prediction =
        predictions(classify(ImageInput.fromRgb(rgb, width, height, imageSpec), 1))[0]

    /** Classifies one image of 0xAARRGGBB pixels (Bitmap.getPixels), preprocessed as in training; alpha is dropped. */
    fun classifyArgb(argb: IntArray, width: Int, height: Int): Prediction =
        predictions(classify(ImageInput.fromArgb(argb, width, height, imageSpec), 1))[0]

    /** Each sample of [result] with its class's name. */
    fun predictions(result: Result): List<Prediction> = result.predictions.indices.map { i ->
        val k = result.predictions[i].toInt()
        Prediction(classNames[k], k, result.exits[i])
    }

    /** Classifies `n` samples laid out one after another in `pixels` (n x C x H x W floats). */
    @Synchronized
    fun classify(pixels: FloatArray, n: Int): Result {
        check(handle != 0L) { "EarlyExitClassifier is closed" }
        require(n >= 1) { "classify: n must be at least 1 | got: $n" }
        require(pixels.size.toLong() == n.toLong() * sampleSize) {
            "classify: pixels has the wrong size | got: ${pixels.size} floats | expected: n x C x H x W = " +
                "$n x ${inputShape.joinToString(" x ")} = ${n.toLong() * sampleSize}"
        }
        val result = Result(LongArray(n), IntArray(n), FloatArray(n * numClasses))
        EdgeExitNative.run(handle, pixels, n, result.predictions, result.exits, result.logits)
        return result
    }

    /**
     * Runs the bundle's test vectors (pte/program.bpte, made at export) through the program this classifier runs and
     * compares every output with the tolerance of the bundle's precision (1e-4 fp32, 0.1 int8): do it once before
     * trusting the device's answers, and check [Verification.passed]. A failing vector is a result, not an
     * exception; [EdgeExitException] means the vectors could not be read at all, or the bundle has none: a
     * deployable bundle (`edgeexit export`'s BUNDLE-slim) carries them only when exported with --slim-vectors.
     */
    @Synchronized
    fun verify(): Verification {
        check(handle != 0L) { "EarlyExitClassifier is closed" }
        val methods = EdgeExitNative.verify(handle)
        return Verification(EdgeExitNative.verifyTolerance(handle), methods.toList())
    }

    /** Milliseconds each segment took in the last [classify] call. */
    @Synchronized
    fun segmentMs(): DoubleArray {
        check(handle != 0L) { "EarlyExitClassifier is closed" }
        return DoubleArray(numExits) { k -> EdgeExitNative.segmentMs(handle, k) }
    }

    @Synchronized
    override fun close() {
        if (handle != 0L) {
            EdgeExitNative.close(handle)
            handle = 0L
        }
    }
}

/** The JNI surface of libedgeexit_jni (src/main/cpp/edgeexit_jni.cpp); errors arrive as [EdgeExitException]. */
internal object EdgeExitNative {
    init {
        System.loadLibrary("edgeexit_jni")
    }

    @JvmStatic external fun open(bundleDir: String): Long
    @JvmStatic external fun run(handle: Long, pixels: FloatArray, n: Int, predictions: LongArray, exits: IntArray,
                                logits: FloatArray)
    @JvmStatic external fun inputShape(handle: Long): IntArray
    @JvmStatic external fun numClasses(handle: Long): Int
    @JvmStatic external fun numExits(handle: Long): Int
    @JvmStatic external fun classNames(handle: Long): Array<ByteArray>
    @JvmStatic external fun inputResize(handle: Long): String
    @JvmStatic external fun inputNormalisation(handle: Long): FloatArray
    @JvmStatic external fun segmentMs(handle: Long, k: Int): Double
    @JvmStatic external fun verify(handle: Long): Array<MethodCheck>
    @JvmStatic external fun verifyTolerance(handle: Long): Double
    @JvmStatic external fun close(handle: Long)
}
