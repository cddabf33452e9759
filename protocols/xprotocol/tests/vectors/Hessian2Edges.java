// Writes hessian2_java_edges.tsv: what Caucho's Hessian2Output writes for the
// values Python's types are narrower for (dates beyond datetime's years
// 1-9999, strings with lone UTF-16 surrogates). Each value is also read back
// with Hessian2Input and re-written, so the file only holds what Java itself
// accepts and reproduces. Not run by the tests; to regenerate (Debian:
// apt-get install libhessian-java, OpenJDK 17):
//   javac -cp /usr/share/java/hessian.jar Hessian2Edges.java
//   java --add-opens java.base/java.lang=ALL-UNNAMED -cp /usr/share/java/hessian.jar:. Hessian2Edges > hessian2_java_edges.tsv
import com.caucho.hessian.io.Hessian2Input;
import com.caucho.hessian.io.Hessian2Output;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.Arrays;
import java.util.Date;

public class Hessian2Edges {
  static String hex(byte[] bytes) {
    StringBuilder s = new StringBuilder();
    for (byte b : bytes) s.append(String.format("%02x", b));
    return s.toString();
  }

  static byte[] encode(Object value) throws Exception {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    Hessian2Output out = new Hessian2Output(bytes);
    out.writeObject(value);
    out.flush();
    return bytes.toByteArray();
  }

  static void emit(String label, Object value) throws Exception {
    byte[] bytes = encode(value);
    Object back = new Hessian2Input(new ByteArrayInputStream(bytes)).readObject();
    if (!back.equals(value) || !Arrays.equals(encode(back), bytes)) {
      throw new IllegalStateException("Java does not round trip " + label);
    }
    System.out.println(label + "\t" + hex(bytes));
  }

  public static void main(String[] args) throws Exception {
    long[] dates = {
      Long.MIN_VALUE, Long.MAX_VALUE,
      -62135596800001L, -62135596800000L, // just before 0001-01-01, and that day
      253402300799999L, 253402300800000L, // the last millisecond of 9999, and 10000-01-01
      -2147483648L * 60000L, 2147483647L * 60000L, // the 'K' (minutes) range's ends
      2147483648L * 60000L, -2147483649L * 60000L, // whole minutes just past it: 'J'
      -62135596860000L, -1L, 1L, // a 'K' date before the year 1; around 1970
    };
    for (long millis : dates) emit("date:" + millis, new Date(millis));
    emit("string:\\uD800", "\ud800");
    emit("string:a\\uDC00b", "a\udc00b");
    emit("string:\\uDE00\\uD83D", "\ude00\ud83d"); // a pair in the wrong order: two lone surrogates
    emit("string:\\uD83D+x", "\ud83dx");
    String x32767 = "x".repeat(32767);
    emit("string:x*32767+\\uD800+y", x32767 + "\ud800y"); // a lone high surrogate ends no chunk either
    emit("string:x*32767+\\uDC00+y", x32767 + "\udc00y");
    emit("string:\\uDBFF*40", "\udbff".repeat(40));
  }
}
