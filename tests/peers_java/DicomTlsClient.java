// A foreign DICOM TLS client on Java's JSSE, as dcm4che's tools are: PKCS#12 key and trust
// stores, TLS 1.2+, one association. It sends the PDUs found in the files named on the
// command line, in order, and after each one prints the type and length of every PDU the
// server answers with ("PDU 02 <length>"), until it has an answer or the server closes.
//
//   java DicomTlsClient.java HOST PORT KEYSTORE TRUSTSTORE PASSWORD PDU-FILE...
import java.io.DataInputStream;
import java.io.FileInputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public class DicomTlsClient {
    public static void main(String[] args) throws Exception {
        char[] password = args[4].toCharArray();
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[2])) { keys.load(in, password); }
        KeyStore trust = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[3])) { trust.load(in, password); }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        try (SSLSocket sock = (SSLSocket) ctx.getSocketFactory().createSocket(args[0], Integer.parseInt(args[1]))) {
            sock.setTcpNoDelay(true);
            sock.setSoTimeout(10000);
            sock.setEnabledProtocols(new String[] {"TLSv1.3", "TLSv1.2"});
            sock.startHandshake();
            System.out.println("TLS " + sock.getSession().getProtocol() + " " + sock.getSession().getCipherSuite());
            OutputStream out = sock.getOutputStream();
            DataInputStream in = new DataInputStream(sock.getInputStream());
            for (int i = 5; i < args.length; i++) {
                out.write(Files.readAllBytes(Path.of(args[i])));
                out.flush();
                int type = in.readUnsignedByte();
                in.readUnsignedByte();
                long length = in.readInt() & 0xFFFFFFFFL;
                byte[] body = new byte[(int) length];
                in.readFully(body);
                StringBuilder hex = new StringBuilder();
                for (byte b : body) hex.append(String.format("%02x", b));
                System.out.println(String.format("PDU %02x %d %s", type, length, hex));
            }
        }
    }
}
