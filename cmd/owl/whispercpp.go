//go:build whispercpp

package main

// Linking the whispercpp backend registers it with the speech package, for
// --backend whispercpp. The command is where optional backends are chosen.
import _ "github.com/owlengine/owl/speech/whispercpp"
